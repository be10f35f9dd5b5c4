/**
 * What the plain-profile tests share: a BC1 knock sent from a chosen local address (127.0.0.1, 127.0.0.2, ...) with
 * the one-time credential it earns (functions/core/connect-credential.ts), a CONNECT packet built with mqtt-packet,
 * and raw CONNECT bytes sent over a TCP socket bound to a chosen local address, answered by the CONNACK return code,
 * 'reset' (a gate or firewall refused the connection) or 'closed' (closed, or nothing within `timeoutMs`: a SYN
 * that nftables dropped).
 */
import { randomBytes } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { connect as tcpConnect } from 'node:net';
import { generate } from 'mqtt-packet';
import { buildKnock } from '../../device-client/knock.ts';
import { connectCredential } from '../../functions/core/connect-credential.ts';
import type { DeviceConfig } from '../../functions/core/device-config.ts';

const knockIo = { now: () => Date.now(), randomBytes: (n: number) => new Uint8Array(randomBytes(n)) };

/** Sends a native knock of `device` from `address` to 127.0.0.1:`spaPort`, waits `settleMs`; its credential. */
export async function knockFrom(
  device: DeviceConfig,
  spaPort: number,
  address = '127.0.0.1',
  settleMs = 150,
): Promise<string> {
  const knock = buildKnock(device, knockIo, 'native');
  const socket = createSocket('udp4');
  await new Promise<void>((resolve) => socket.bind(0, address, resolve));
  await new Promise<void>((resolve, reject) =>
    socket.send(knock.bytes, spaPort, '127.0.0.1', (error) => (error ? reject(error) : resolve())),
  );
  socket.close();
  await new Promise((resolve) => setTimeout(resolve, settleMs));
  return connectCredential(device.spa.native!.key, knock.identity!);
}

/** An MQTT 3.1.1 CONNECT packet. */
export function connectBytes(
  username: string | undefined,
  password: string | undefined,
  clientId: string,
): Buffer {
  return generate({
    cmd: 'connect',
    protocolId: 'MQTT',
    protocolVersion: 4,
    clean: true,
    clientId,
    keepalive: 30,
    ...(username === undefined ? {} : { username }),
    ...(password === undefined ? {} : { password: Buffer.from(password) }),
  });
}

export type ConnectAnswer = number | 'reset' | 'closed';

/** Sends `bytes` to 127.0.0.1:`port` from `localAddress` and reads the answer (see the module comment). */
export function sendConnect(
  bytes: Buffer,
  port: number,
  localAddress: string,
  timeoutMs = 5000,
): Promise<ConnectAnswer> {
  return new Promise((resolve) => {
    const socket = tcpConnect({ host: '127.0.0.1', port, localAddress });
    let settled = false;
    const done = (value: ConnectAnswer) => {
      if (settled) return;
      settled = true;
      socket.destroy();
      resolve(value);
    };
    let received = Buffer.alloc(0);
    socket.on('connect', () => socket.write(bytes));
    socket.on('data', (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      if (received.length >= 4 && received[0] === 0x20) done(received[3]!);
    });
    socket.on('error', (error: NodeJS.ErrnoException) =>
      done(error.code === 'ECONNRESET' ? 'reset' : 'closed'),
    );
    socket.on('close', () => done('closed'));
    setTimeout(() => done('closed'), timeoutMs).unref();
  });
}
