// Preloaded into the HTTP Observatory (`node --require`) when scanning the sandbox: its domain is in
// no DNS, so the names in SCAN_RESOLVE (JSON {"name": "ip"}) resolve to the edge host, the way
// `curl --resolve` does. TLS still sees the real name (SNI, certificate check); every other name
// resolves normally.
"use strict";

const dns = require("node:dns");

const pinned = new Map(
  Object.entries(JSON.parse(process.env.SCAN_RESOLVE || "{}")).map(([name, ip]) => [
    name.toLowerCase(),
    ip,
  ]),
);
const pinnedAddress = (hostname) => pinned.get(String(hostname).toLowerCase()) ?? hostname;

// An IP literal passes through dns.lookup unchanged, with every option (family, all) honoured.
const lookup = dns.lookup;
dns.lookup = function lookupPinned(hostname, ...rest) {
  return lookup.call(this, pinnedAddress(hostname), ...rest);
};

const promisesLookup = dns.promises.lookup;
dns.promises.lookup = function lookupPinned(hostname, ...rest) {
  return promisesLookup.call(this, pinnedAddress(hostname), ...rest);
};
