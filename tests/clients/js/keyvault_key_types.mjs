// The stock @azure/keyvault-keys over the key types and algorithms beyond RSA wrapping, against
// a running `customerkey serve`: EC keys (P-256, P-384, EC-HSM) with ES256/ES384 sign/verify,
// RSA PS256/RS256 sign/verify, RSA-OAEP and RSA1_5 encrypt/decrypt, RSA-OAEP-256
// wrapKey/unwrapKey, KeyClient.getRandomBytes, and an oct-HSM key with AES-GCM encrypt/decrypt
// and AES-KW wrap/unwrap. Driven by tests/clients/test_azure_identity_clients.py, which sets:
//   CK_AUTHORITY    https://localhost:<port>       the authority host (token endpoint)
//   CK_TENANT       the tenant to sign in to
//   CK_CLIENT_ID, CK_CLIENT_SECRET                  a principal with every key permission
//   CK_SIGNER_ID, CK_SIGNER_SECRET                  one with the six crypto permissions but
//                                                   not get (every operation on the server)
//   CK_VAULT_URL    https://<vault>.vault.localhost:<port>
//   CK_DOMAIN       vault.localhost (names under it are sent to loopback)
//   CK_PREFIX       the prefix of the key names to use
//   NODE_EXTRA_CA_CERTS  the server's CA
// Every signature is also checked here with node:crypto and the public key the vault showed;
// the test checks them once more with pyca/cryptography. Exits 0 after printing one JSON line
// of what it saw; any failure throws (exit 1).
import assert from "node:assert/strict";
import crypto from "node:crypto";
import { CryptographyClient, KeyClient } from "@azure/keyvault-keys";
import { credentialFrom, env, resolveToLoopback } from "./loopback.mjs";

resolveToLoopback(env("CK_DOMAIN"));

const credential = credentialFrom("CK_CLIENT_ID", "CK_CLIENT_SECRET");
const signerCredential = credentialFrom("CK_SIGNER_ID", "CK_SIGNER_SECRET");
const client = new KeyClient(env("CK_VAULT_URL"), credential);
const prefix = env("CK_PREFIX");
const who = [
  ["app", credential],
  ["signer", signerCredential],
];
const b64 = (bytes) => Buffer.from(bytes).toString("base64");
const b64url = (bytes) => Buffer.from(bytes).toString("base64url");
const message = Buffer.from("signed by node");
const seen = { message: b64(message), ec: [], rsa: {} };

// Key Vault answers a refusal with its error body; the SDK rejects with the status.
const refused = (status) => (error) => {
  assert.equal(error.statusCode, status, String(error));
  return true;
};

// ------------------------------------------------------------------ EC: ES256 and ES384

for (const [curve, algorithm, hash, size, hsm] of [
  ["P-256", "ES256", "sha256", 32, false],
  ["P-384", "ES384", "sha384", 48, false],
  ["P-256", "ES256", "sha256", 32, true],
]) {
  const name = `${prefix}-ec-${curve.toLowerCase()}${hsm ? "-hsm" : ""}`;
  const key = await client.createEcKey(name, { curve, hsm });
  assert.equal(key.keyType, hsm ? "EC-HSM" : "EC");
  assert.equal(key.key.crv, curve);
  assert.equal(key.key.x.length, size);
  assert.equal(key.key.y.length, size);
  assert.deepEqual([...key.keyOperations].sort(), ["sign", "verify"]);
  assert.equal(key.key.d, undefined);
  const publicKey = crypto.createPublicKey({
    key: { kty: "EC", crv: curve, x: b64url(key.key.x), y: b64url(key.key.y) },
    format: "jwk",
  });
  const digest = crypto.createHash(hash).update(message).digest();
  const other = crypto.createHash(hash).update("something else").digest();
  const signatures = [];
  for (const [label, cred] of who) {
    const cryptoClient = new CryptographyClient(key.id, cred);
    const signed = await cryptoClient.sign(algorithm, digest);
    assert.equal(signed.algorithm, algorithm);
    assert.equal(signed.keyID, key.id);
    assert.equal(signed.result.length, 2 * size, `${label}: r || s, ${size} bytes each`);
    // ECDSA is randomised: each signature differs, and each checks out outside the vault.
    const valid = crypto.verify(
      hash,
      message,
      { key: publicKey, dsaEncoding: "ieee-p1363" },
      Buffer.from(signed.result),
    );
    assert.ok(valid, `${label}: node:crypto rejects the vault's ${algorithm} signature`);
    assert.equal((await cryptoClient.verify(algorithm, digest, signed.result)).result, true);
    assert.equal((await cryptoClient.verify(algorithm, other, signed.result)).result, false);
    const data = await cryptoClient.signData(algorithm, message);
    assert.equal((await cryptoClient.verifyData(algorithm, message, data.result)).result, true);
    signatures.push(b64(signed.result));
  }
  // A signature made outside the vault with a key of our own does not verify on this key.
  const { privateKey } = crypto.generateKeyPairSync("ec", { namedCurve: curve });
  const foreign = crypto.sign(hash, message, { key: privateKey, dsaEncoding: "ieee-p1363" });
  const remote = new CryptographyClient(key.id, signerCredential);
  assert.equal((await remote.verify(algorithm, digest, foreign)).result, false);
  // An EC key does not encrypt.
  await assert.rejects(
    remote.encrypt({ algorithm: "RSA-OAEP", plaintext: Buffer.from("no") }),
    refused(400),
  );
  seen.ec.push({
    kid: key.id,
    kty: key.keyType,
    crv: curve,
    x: b64(key.key.x),
    y: b64(key.key.y),
    algorithm,
    signatures,
  });
}

// ------------------------------------------------------------------ RSA

const rsa = await client.createRsaKey(`${prefix}-rsa`, { keySize: 2048 });
assert.equal(rsa.keyType, "RSA");
assert.equal(rsa.key.n.length, 256);
const rsaPublic = crypto.createPublicKey({
  key: { kty: "RSA", n: b64url(rsa.key.n), e: b64url(rsa.key.e) },
  format: "jwk",
});
seen.rsa = { kid: rsa.id, n: b64(rsa.key.n), e: b64(rsa.key.e), signatures: {} };
const sha256 = crypto.createHash("sha256").update(message).digest();
for (const [algorithm, padding] of [
  ["PS256", crypto.constants.RSA_PKCS1_PSS_PADDING],
  ["RS256", crypto.constants.RSA_PKCS1_PADDING],
]) {
  seen.rsa.signatures[algorithm] = [];
  for (const [label, cred] of who) {
    const cryptoClient = new CryptographyClient(rsa.id, cred);
    const signed = await cryptoClient.sign(algorithm, sha256);
    assert.equal(signed.result.length, 256);
    const options = { key: rsaPublic, padding, saltLength: 32 };
    assert.ok(
      crypto.verify("sha256", message, options, Buffer.from(signed.result)),
      `${label}: node:crypto rejects the vault's ${algorithm} signature`,
    );
    assert.equal((await cryptoClient.verify(algorithm, sha256, signed.result)).result, true);
    const flipped = Buffer.from(signed.result);
    flipped[0] ^= 1;
    assert.equal((await cryptoClient.verify(algorithm, sha256, flipped)).result, false);
    seen.rsa.signatures[algorithm].push(b64(signed.result));
  }
}
// RS256 over data: the app (which may read the key) verifies locally, the signer on the server.
for (const [, cred] of who) {
  const cryptoClient = new CryptographyClient(rsa.id, cred);
  const data = await cryptoClient.signData("RS256", message);
  assert.equal((await cryptoClient.verifyData("RS256", message, data.result)).result, true);
}

// encrypt/decrypt RSA-OAEP and RSA1_5 (the app encrypts locally with the public key, the
// signer on the server; the vault decrypts both), and wrap/unwrap with RSA-OAEP-256.
const secret = crypto.randomBytes(32);
for (const [label, cred] of who) {
  const cryptoClient = new CryptographyClient(rsa.id, cred);
  for (const algorithm of ["RSA-OAEP", "RSA1_5"]) {
    const encrypted = await cryptoClient.encrypt({ algorithm, plaintext: secret });
    assert.equal(encrypted.result.length, 256);
    const decrypted = await cryptoClient.decrypt({ algorithm, ciphertext: encrypted.result });
    assert.deepEqual(Buffer.from(decrypted.result), secret, `${label} ${algorithm}`);
  }
  const wrapped = await cryptoClient.wrapKey("RSA-OAEP-256", secret);
  assert.equal(wrapped.result.length, 256);
  const unwrapped = await cryptoClient.unwrapKey("RSA-OAEP-256", wrapped.result);
  assert.deepEqual(Buffer.from(unwrapped.result), secret, `${label} RSA-OAEP-256`);
}
// Ciphertexts made with node:crypto alone open in the vault.
const signerRsa = new CryptographyClient(rsa.id, signerCredential);
for (const [algorithm, options] of [
  ["RSA-OAEP", { padding: crypto.constants.RSA_PKCS1_OAEP_PADDING, oaepHash: "sha1" }],
  ["RSA-OAEP-256", { padding: crypto.constants.RSA_PKCS1_OAEP_PADDING, oaepHash: "sha256" }],
  ["RSA1_5", { padding: crypto.constants.RSA_PKCS1_PADDING }],
]) {
  const local = crypto.publicEncrypt({ key: rsaPublic, ...options }, secret);
  const opened = await signerRsa.decrypt({ algorithm, ciphertext: local });
  assert.deepEqual(Buffer.from(opened.result), secret, `node:crypto ${algorithm}`);
  const unwrapped = await signerRsa.unwrapKey(algorithm, local);
  assert.deepEqual(Buffer.from(unwrapped.result), secret, `node:crypto ${algorithm} unwrap`);
}
seen.rsa.crypto = true;

// ------------------------------------------------------------------ getRandomBytes

const random = [];
for (let i = 0; i < 3; i += 1) random.push(await client.getRandomBytes(32));
assert.ok(random.every((bytes) => bytes.length === 32));
assert.equal(new Set(random.map(b64)).size, 3);
assert.equal((await client.getRandomBytes(128)).length, 128);
await assert.rejects(client.getRandomBytes(129), refused(400));
seen.random = random.map(b64);

// ------------------------------------------------------------------ oct-HSM: AES-GCM, AES-KW

const aes = await client.createOctKey(`${prefix}-aes`, { hsm: true, keySize: 256 });
assert.equal(aes.keyType, "oct-HSM");
assert.equal(aes.key.k, undefined, "the AES key never leaves the vault");
assert.deepEqual([...aes.keyOperations].sort(), ["decrypt", "encrypt", "unwrapKey", "wrapKey"]);
seen.aes = { kid: aes.id };
for (const [label, cred] of who) {
  const cryptoClient = new CryptographyClient(aes.id, cred);
  const plaintext = Buffer.from("the plans, from node");
  const aad = Buffer.from("header");
  const sealed = await cryptoClient.encrypt({
    algorithm: "A256GCM",
    plaintext,
    additionalAuthenticatedData: aad,
  });
  assert.equal(sealed.iv.length, 12, label);
  assert.equal(sealed.authenticationTag.length, 16, label);
  assert.equal(sealed.result.length, plaintext.length, label);
  const opened = await cryptoClient.decrypt({
    algorithm: "A256GCM",
    ciphertext: sealed.result,
    iv: sealed.iv,
    authenticationTag: sealed.authenticationTag,
    additionalAuthenticatedData: aad,
  });
  assert.deepEqual(Buffer.from(opened.result), plaintext, label);
  // Another header, or a changed tag, is refused.
  for (const [header, tag] of [
    [Buffer.from("other"), sealed.authenticationTag],
    [aad, Buffer.alloc(16)],
  ]) {
    await assert.rejects(
      cryptoClient.decrypt({
        algorithm: "A256GCM",
        ciphertext: sealed.result,
        iv: sealed.iv,
        authenticationTag: tag,
        additionalAuthenticatedData: header,
      }),
      refused(400),
    );
  }
  const wrapped = await cryptoClient.wrapKey("A256KW", secret);
  assert.equal(wrapped.result.length, 40, label);
  const unwrapped = await cryptoClient.unwrapKey("A256KW", wrapped.result);
  assert.deepEqual(Buffer.from(unwrapped.result), secret, label);
  seen.aes[label] = { iv: b64(sealed.iv), tag: b64(sealed.authenticationTag) };
}

console.log(JSON.stringify(seen));
