/** Shapes shared by both packet formats and by everything that imports the protocol core. */

export type Protocol = 'tcp' | 'udp';

/** One requested or allowed opening: a transport protocol and a port (1..65535). */
export interface AccessEntry {
  readonly protocol: Protocol;
  readonly port: number;
}

export type AddressFamily = 4 | 6;

/** An IP address in its textual form (dotted quad, or RFC 5952 IPv6) with its family. */
export interface IpAddress {
  readonly family: AddressFamily;
  readonly address: string;
}

/** The HMAC and digest algorithms the fwknop client offers (fwknop -m / --hmac-digest-type). */
export type FwknopHashType = 'md5' | 'sha1' | 'sha256' | 'sha384' | 'sha512' | 'sha3-256' | 'sha3-512';
