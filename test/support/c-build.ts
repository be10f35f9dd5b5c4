/**
 * Compiles the C device library (device-client/c/) and a program that uses it with the host `cc`, the one way the
 * tests build C: C99, -Wall -Wextra -Werror -pedantic, against Debian's libmbedtls-dev (and libmosquitto-dev for
 * the example program). A missing compiler or header throws naming the Debian package to install (never a skip).
 */
import { existsSync } from 'node:fs';
import { runProcess } from './run-process.ts';

/** device-client/c/ with a trailing slash. */
export const C_ROOT = new URL('../../device-client/c/', import.meta.url).pathname;
/** The library's translation units (what a device links). */
export const C_LIBRARY_SOURCES: readonly string[] = [
  'src/bc1.c',
  'src/key_offer.c',
  'src/key_messages.c',
  'src/connect_credential.c',
  'src/backend_mbedtls.c',
].map((f) => C_ROOT + f);
const CFLAGS = ['-std=c99', '-Wall', '-Wextra', '-Werror', '-pedantic', '-O1', '-g', `-I${C_ROOT}include`];
export const SANITIZE = [
  '-fsanitize=address,undefined',
  '-fno-sanitize-recover=all',
  '-fno-omit-frame-pointer',
];

/** Headers whose absence means a missing Debian package. */
const HEADERS: Record<string, { readonly header: string; readonly pkg: string }> = {
  mbedcrypto: { header: '/usr/include/mbedtls/chachapoly.h', pkg: 'libmbedtls-dev' },
  mosquitto: { header: '/usr/include/mosquitto.h', pkg: 'libmosquitto-dev' },
};

export interface CBuild {
  /** Sources beyond the library's (a test driver or an example program). */
  readonly program: readonly string[];
  readonly output: string;
  /** Libraries to link, without -l: 'mbedcrypto', 'mosquitto'. */
  readonly libraries: readonly string[];
  /** More compiler flags (sanitizers, -D...). */
  readonly extra?: readonly string[];
}

export async function compileC(build: CBuild): Promise<void> {
  for (const library of build.libraries) {
    const need = HEADERS[library];
    if (need !== undefined && !existsSync(need.header)) {
      throw new Error(`${need.header} is missing: apt-get install ${need.pkg}`);
    }
  }
  const args = [
    ...CFLAGS,
    ...(build.extra ?? []),
    ...C_LIBRARY_SOURCES,
    ...build.program,
    ...build.libraries.map((library) => `-l${library}`),
    '-o',
    build.output,
  ];
  const result = await runProcess('cc', args);
  if (result.error !== undefined) {
    throw new Error(`cannot run the C compiler 'cc' (${result.error.message}): apt-get install gcc`);
  }
  if (result.status !== 0) {
    const missing = /(mbedtls\/\w+|mosquitto)\.h: No such file|cannot find -l(mbedcrypto|mosquitto)/.exec(
      result.stderr,
    );
    const pkg =
      missing === null ? undefined : missing[0].includes('mosquitto') ? 'libmosquitto-dev' : 'libmbedtls-dev';
    throw new Error(
      (pkg !== undefined
        ? `a C dependency is missing: apt-get install ${pkg}\n`
        : 'the C code does not compile:\n') + result.stderr,
    );
  }
}
