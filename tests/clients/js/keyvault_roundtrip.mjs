// The stock @azure/identity ClientSecretCredential and @azure/keyvault-keys against a running
// `customerkey serve`, over every RSA key operation. Driven by
// tests/clients/test_azure_identity_clients.py, which installs the packages with npm and sets:
//   CK_AUTHORITY    https://localhost:<port>       the authority host (token endpoint)
//   CK_TENANT       the tenant to sign in to
//   CK_CLIENT_ID, CK_CLIENT_SECRET                  a principal with every key permission
//   CK_CRYPTO_ID, CK_CRYPTO_SECRET                  one with wrap/unwrap/encrypt/decrypt only
//   CK_VAULT_URL    https://<vault>.vault.localhost:<port>
//   CK_DOMAIN       vault.localhost (names under it are sent to loopback)
//   CK_KEY          the key name to use
//   NODE_EXTRA_CA_CERTS  the server's CA
// Exits 0 after printing one JSON line of what it saw; any failure throws (exit 1).
import assert from "node:assert/strict";
import { CryptographyClient, KeyClient } from "@azure/keyvault-keys";
import { credentialFrom, env, resolveToLoopback } from "./loopback.mjs";

resolveToLoopback(env("CK_DOMAIN"));

const credential = credentialFrom("CK_CLIENT_ID", "CK_CLIENT_SECRET");
const cryptoCredential = credentialFrom("CK_CRYPTO_ID", "CK_CRYPTO_SECRET");
const client = new KeyClient(env("CK_VAULT_URL"), credential);
const name = env("CK_KEY");
const seen = {};
const plaintext = Buffer.from("customerkey from node");

// create, get, list
const created = await client.createRsaKey(name, {
  keySize: 2048,
  keyOps: ["wrapKey", "unwrapKey", "encrypt", "decrypt"],
  tags: { from: "node" },
});
assert.equal(created.keyType, "RSA");
assert.equal(created.key.n.length, 256);
assert.deepEqual(created.properties.tags, { from: "node" });
const fetched = await client.getKey(name);
assert.equal(fetched.id, created.id);
assert.equal(fetched.properties.version, created.properties.version);
const listed = [];
for await (const properties of client.listPropertiesOfKeys()) listed.push(properties.name);
assert.ok(listed.includes(name), `listed: ${listed}`);
const versions = [];
for await (const properties of client.listPropertiesOfKeyVersions(name)) {
  versions.push(properties.version);
}
assert.deepEqual(versions, [created.properties.version]);
seen.created = created.id;
seen.listed = listed.length;

// wrap/unwrap and encrypt/decrypt: with every permission (the SDK may work locally with the
// public key), and as a principal that cannot read the key (every operation on the server).
for (const [who, cred] of [["app", credential], ["crypto", cryptoCredential]]) {
  const crypto = new CryptographyClient(created.id, cred);
  for (const algorithm of ["RSA-OAEP-256", "RSA-OAEP"]) {
    const wrapped = await crypto.wrapKey(algorithm, plaintext);
    assert.equal(wrapped.result.length, 256);
    const unwrapped = await crypto.unwrapKey(algorithm, wrapped.result);
    assert.deepEqual(Buffer.from(unwrapped.result), plaintext);
    const encrypted = await crypto.encrypt({ algorithm, plaintext });
    const decrypted = await crypto.decrypt({ algorithm, ciphertext: encrypted.result });
    assert.deepEqual(Buffer.from(decrypted.result), plaintext);
  }
  seen[`crypto_${who}`] = true;
}
const wrappedForLater = (await new CryptographyClient(created.id, cryptoCredential).wrapKey(
  "RSA-OAEP-256",
  plaintext,
)).result;

// backup, delete, recover, delete, purge, restore
const backup = await client.backupKey(name);
assert.ok(backup.length > 256);
const deleting = await client.beginDeleteKey(name, { intervalInMs: 100 });
const deleted = await deleting.pollUntilDone();
assert.equal(deleted.name, name);
assert.ok(deleted.properties.recoveryId.endsWith(`/deletedkeys/${name}`));
const deletedNames = [];
for await (const item of client.listDeletedKeys()) deletedNames.push(item.name);
assert.ok(deletedNames.includes(name));
await assert.rejects(client.getKey(name), (error) => error.statusCode === 404);
const recovering = await client.beginRecoverDeletedKey(name, { intervalInMs: 100 });
const recovered = await recovering.pollUntilDone();
assert.equal(recovered.id, created.id);
await (await client.beginDeleteKey(name, { intervalInMs: 100 })).pollUntilDone();
await client.purgeDeletedKey(name);
await assert.rejects(client.getDeletedKey(name), (error) => error.statusCode === 404);
const restored = await client.restoreKeyBackup(backup);
assert.equal(restored.id, created.id);
const afterRestore = new CryptographyClient(restored.id, cryptoCredential);
const unwrapped = await afterRestore.unwrapKey("RSA-OAEP-256", wrappedForLater);
assert.deepEqual(Buffer.from(unwrapped.result), plaintext);
seen.restored = restored.id;

console.log(JSON.stringify(seen));
