/**
 * The receiver with the nftables firewall as a child process for the kill test (test/hostile/faults-nftables.test.ts),
 * run inside a private network namespace: `node <this file> KEYFILE TABLE PORT`. KEYFILE (JSON, 0600)
 * holds one device's BC1 key id and key; the device may open tcp/PORT for at most 2 s. Prints `{"port":N}` once
 * the receiver listens on 127.0.0.1 (port 0), then `{"granted":...}` for each grant; it never revokes on its own
 * before it is killed.
 */
import { readFileSync } from 'node:fs';
import { StaticDeviceDirectory } from '../../../functions/local/file-device-directory.ts';
import { startNftablesFirewall } from '../../../functions/local/nftables-firewall.ts';
import { MemoryNonceStore } from '../../../functions/receiver/memory-nonce-store.ts';
import { createReceiverDeps } from '../../../functions/receiver/receiver-deps.ts';
import { startReceiver } from '../../../functions/receiver/udp-receiver.ts';

const [keyFile, table, portText] = process.argv.slice(2);
const port = Number(portText);
const keys = JSON.parse(readFileSync(keyFile ?? '', 'utf8')) as { keyId: number; key: string };
const firewall = await startNftablesFirewall({ table: table ?? '', ports: [{ protocol: 'tcp', port }] });
const deps = createReceiverDeps({
  directory: new StaticDeviceDirectory([
    {
      id: 'kill-test',
      enabled: true,
      allowedAccess: [{ protocol: 'tcp', port }],
      maxOpenSeconds: 2,
      nativeKeys: [{ keyId: keys.keyId, key: new Uint8Array(Buffer.from(keys.key, 'base64')) }],
    },
  ]),
  nonces: new MemoryNonceStore({ clock: { now: () => Date.now() - 60_000 } }),
  firewall,
  audit: {
    write: (event) => {
      if (event.type === 'grant.opened')
        process.stdout.write(`${JSON.stringify({ granted: event.source })}\n`);
    },
  },
});
const receiver = await startReceiver({ host: '127.0.0.1', port: 0, deps });
process.stdout.write(`${JSON.stringify({ port: receiver.address.port })}\n`);
