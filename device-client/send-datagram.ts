/**
 * Sends one UDP datagram and closes the socket. The receiver never answers, so there is nothing to wait for:
 * the promise settles when the kernel has taken the datagram (or with the send/lookup error).
 * Contract: one datagram per call; the socket family follows the resolved address; never listens for replies.
 */
import { createSocket } from 'node:dgram';
import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';

export interface SentDatagram {
  /** The address the datagram went to (after name resolution). */
  readonly address: string;
  readonly port: number;
  readonly bytes: number;
}

export async function sendDatagram(host: string, port: number, bytes: Uint8Array): Promise<SentDatagram> {
  const address = isIP(host) === 0 ? (await lookup(host)).address : host;
  const socket = createSocket(isIP(address) === 6 ? 'udp6' : 'udp4');
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.send(bytes, port, address, (error) => (error ? reject(error) : resolve()));
    });
  } finally {
    socket.close();
  }
  return { address, port, bytes: bytes.length };
}
