// Shared by the scripts in this folder: the settings the Python test passes in the
// environment, and the vault host names sent to loopback.
import assert from "node:assert/strict";
import dns from "node:dns";
import { ClientSecretCredential } from "@azure/identity";

/** The value of an environment variable the test must have set. */
export const env = (name) => {
  const value = process.env[name];
  assert.ok(value, `${name} is not set`);
  return value;
};

/** The stock credential for the principal whose id and secret the test passes in the
 * environment variables `idName` and `secretName`, signing in to customerkey's authority. */
export const credentialFrom = (idName, secretName) =>
  new ClientSecretCredential(env("CK_TENANT"), env(idName), env(secretName), {
    authorityHost: env("CK_AUTHORITY"),
    disableInstanceDiscovery: true,
  });

/** Node does not resolve names under .localhost itself: send `domain` and the names under it
 * to 127.0.0.1 (what the Python tests' in-process resolver does). */
export function resolveToLoopback(domain) {
  const suffix = domain.toLowerCase();
  const systemLookup = dns.lookup;
  dns.lookup = function lookup(hostname, options, callback) {
    const name = String(hostname).toLowerCase().replace(/\.$/, "");
    if (name === suffix || name.endsWith("." + suffix)) {
      const cb = typeof options === "function" ? options : callback;
      const all = typeof options === "object" && options !== null && options.all;
      process.nextTick(() =>
        all ? cb(null, [{ address: "127.0.0.1", family: 4 }]) : cb(null, "127.0.0.1", 4),
      );
      return {};
    }
    return systemLookup.call(dns, hostname, options, callback);
  };
}
