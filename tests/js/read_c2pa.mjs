// Reads the C2PA manifest store of an image with c2pa-ts (an implementation independent of
// c2pa-rs, which the renderer signs with) and prints it as JSON on stdout:
//   node tests/js/read_c2pa.mjs FILE
// {"valid": bool, "validation": [{code, url?, success}], "active_manifest": label,
//  "manifests": [{label, claim: {...}, assertions: [{label, ...the fields c2pa-ts read}]}]}
// Exits 2 when the file holds no manifest store or is a format c2pa-ts cannot read.
import { webcrypto } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { BMFF, JPEG, PNG } from '@trustnxt/c2pa-ts/asset';
import { SuperBox } from '@trustnxt/c2pa-ts/jumbf';
import { ManifestStore } from '@trustnxt/c2pa-ts/manifest';

// Node 18 (Debian 12's nodejs) has Web Crypto only in node:crypto; c2pa-ts uses the global.
globalThis.crypto ??= webcrypto;

// Back-references into the parsed JUMBF tree (cyclic, and not manifest content).
const SKIPPED = new Set(['sourceBox', 'parentStore']);

function plain(value) {
    if (value instanceof Uint8Array) return Buffer.from(value).toString('base64');
    if (Array.isArray(value)) return value.map(plain);
    if (value && typeof value === 'object') {
        const out = {};
        for (const [key, item] of Object.entries(value)) {
            if (!SKIPPED.has(key) && item !== undefined) out[key] = plain(item);
        }
        return out;
    }
    return value;
}

const path = process.argv[2];
if (!path) {
    console.error('usage: node read_c2pa.mjs FILE');
    process.exit(2);
}
const data = await readFile(path);
const kind = [JPEG, PNG, BMFF].find(format => format.canRead(data));
if (!kind) {
    console.error(`${path}: not a format c2pa-ts reads (it reads JPEG, PNG and BMFF)`);
    process.exit(2);
}
const asset = new kind(data);
const jumbf = asset.getManifestJUMBF();
if (!jumbf) {
    console.error(`${path}: no C2PA manifest store`);
    process.exit(2);
}
const store = ManifestStore.read(SuperBox.fromBuffer(jumbf));
const result = await store.validate(asset);
const active = store.getActiveManifest();
console.log(
    JSON.stringify(
        {
            valid: result.isValid,
            validation: result.toRepresentation(),
            active_manifest: active?.label,
            manifests: store.manifests.map(manifest => ({
                label: manifest.label,
                claim: plain(manifest.claim),
                assertions: (manifest.assertions?.assertions ?? []).map(assertion => ({
                    ...plain(assertion),
                    label: assertion.fullLabel,
                })),
            })),
        },
        null,
        2,
    ),
);
