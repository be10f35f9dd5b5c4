/**
 * Typed errors of the local PKI (misuse and environment only). Messages name the field or file, the value
 * received and the fix.
 */

/** A certificate request the PKI refuses to sign (bad common name, SAN, lifetime), or a PEM it cannot read. */
export class PkiInputError extends Error {
  override readonly name: string = 'PkiInputError';
  /** The option or file at fault, e.g. 'commonName', 'ipAddresses', '/etc/blackcloud/pki/ca.key'. */
  readonly field: string;

  constructor(field: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.field = field;
  }
}

/** A private key file or the PKI directory is readable by others: refused, as ssh refuses such keys. */
export class PkiPermissionError extends Error {
  override readonly name: string = 'PkiPermissionError';
  readonly path: string;
  readonly mode: number;

  constructor(path: string, mode: number, wanted: number, options?: { cause?: unknown }) {
    const octal = (m: number) => (m & 0o777).toString(8).padStart(3, '0');
    super(
      `${path} has mode ${octal(mode)}, which lets other users read private key material: ` +
        `run \`chmod ${octal(wanted)} ${path}\` (or delete it to have it recreated)`,
      options,
    );
    this.path = path;
    this.mode = mode;
  }
}
