/**
 * Result values for untrusted input. Decoders never throw on bad bytes: they return
 * `{ ok: false, reason }` with a reason from a closed, documented set.
 */
export type Ok<T> = { readonly ok: true; readonly value: T };
export type Rejected<R extends string> = { readonly ok: false; readonly reason: R };
export type Result<T, R extends string> = Ok<T> | Rejected<R>;

export const ok = <T>(value: T): Ok<T> => ({ ok: true, value });
export const reject = <R extends string>(reason: R): Rejected<R> => ({ ok: false, reason });
