/**
 * Typed errors of the CDK app. A bad prop fails synth with an `InvalidPropError` whose message names the prop,
 * the value received, what it must be and how to fix it (aws-cdk DESIGN_GUIDELINES: errors say what to do).
 */

/** Renders a received value for an error message: short, never more than 80 characters. */
export function describeValue(value: unknown): string {
  let text: string;
  if (typeof value === 'string') text = JSON.stringify(value);
  else if (value === undefined) text = 'undefined';
  else {
    try {
      text = JSON.stringify(value) ?? String(value);
    } catch {
      text = String(value);
    }
  }
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

/** A stack or construct prop outside its allowed range. Thrown at synth time, before anything is deployed. */
export class InvalidPropError extends Error {
  override readonly name = 'InvalidPropError';
  readonly prop: string;
  readonly value: unknown;

  constructor(prop: string, value: unknown, rule: string, fix: string, options?: { cause?: unknown }) {
    super(`blackcloud: prop '${prop}' ${rule}; received ${describeValue(value)}. Fix: ${fix}`, options);
    this.prop = prop;
    this.value = value;
  }
}

/** An entry file to bundle is missing or does not build. */
export class BundlingError extends Error {
  override readonly name = 'BundlingError';
  readonly entry: string;

  constructor(entry: string, message: string, options?: { cause?: unknown }) {
    super(`blackcloud: cannot bundle '${entry}': ${message}`, options);
    this.entry = entry;
  }
}
