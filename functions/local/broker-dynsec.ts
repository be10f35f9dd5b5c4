/**
 * `blackcloud up --broker` in front of a Mosquitto 2 with the dynamic-security plugin (docs/local.md): keeps the
 * broker's clients and roles in step with the devices file, so `devices add|disable|enable|remove` reach the
 * broker at once (enrolment, sessions closed within seconds, no restart).
 *
 * Contract:
 * - `startBrokerDynsec` opens the admin session (functions/broker/dynsec-admin.ts, the controller's certificate,
 *   straight to the broker, never through the gate) and reconciles once. It resolves undefined, after saying why
 *   through `note`, when the broker cannot be reached or does not answer on the dynamic-security topics (no
 *   plugin, or the controller client lacks its role): `up` then runs as before and cut-off at that broker is the
 *   operator's business.
 * - `sync()` reconciles with `devices()` now; calls while one runs are coalesced into one more run afterwards, so
 *   the last state always reaches the broker. It resolves true once the broker matched, false (after a `note`)
 *   when the plugin refused or did not answer. Never rejects. Every (re)connect of the session syncs again (a
 *   restarted broker comes back in step).
 * - `credentials` is the plain profile's installer (plain-credential-keeper.ts) at that broker: `install` sets the
 *   device client's dynsec password to the knock's one-time credential (`setClientPassword`). Mosquitto 2.0.11's
 *   plugin closes every session of a client whose password it changes, so a credential can only be withdrawn
 *   where no session of the device can be hurt: `withdraw` overwrites it with 32 random bytes (hex) for an
 *   'invalidated' or 'shutdown' credential, and leaves it for 'consumed', 'grant-closed' and 'expired' (the device
 *   may be connected with it: the firewall keeps every address without a grant off the plain port, and the next
 *   knock replaces the password). docs/threat-model.md, "The plain profile", says what that leaves open.
 * - `subscribe(topic, handler)` subscribes the admin session to one more topic (the broker's notice log, for the
 *   session signal: functions/broker/mosquitto-session-watcher.ts); `grantLogAccess()` adds that log to the
 *   controller's role at a broker whose dynamic-security file predates it (dynsec-commands.ts `grantControllerLog`).
 * - `close()` ends the session; idempotent.
 * - `writeBrokerFiles(dir, ...)` writes the recipe's files for that broker (docs/local.md, --broker), made by the
 *   one generator (functions/broker/mosquitto-config.ts): `mosquitto.conf` (rewritten each time) and the plugin's
 *   initial `dynamic-security.json` (only when absent: the plugin keeps its state there), both 0600 in a 0700
 *   directory. Returns the paths.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { coalescedSync } from '../broker/coalesced-sync.ts';
import { connectDynsecAdmin, type DynsecAdmin } from '../broker/dynsec-admin.ts';
import { grantControllerLog } from '../broker/dynsec-commands.ts';
import { debianDynsecPlugin, dynamicSecurityConfig, mosquittoConf } from '../broker/mosquitto-config.ts';
import type { BrokerLogSubscriber } from '../broker/mosquitto-session-watcher.ts';
import type { Pem } from '../pki/local-ca.ts';
import type { CredentialInstaller, WithdrawReason } from '../receiver/plain-credential-keeper.ts';

export interface BrokerDynsecOptions {
  /** The broker itself, mqtts://host:port. */
  readonly url: string;
  readonly caCert: string;
  /** The controller's certificate and key (CN blackcloud-controller). */
  readonly tls: Pem;
  readonly devices: () => readonly { readonly id: string; readonly enabled: boolean }[];
  readonly note: (line: string) => void;
  /** @default 3000 */
  readonly timeoutMs?: number;
}

export interface BrokerDynsec extends BrokerLogSubscriber {
  sync(): Promise<boolean>;
  readonly credentials: CredentialInstaller;
  grantLogAccess(): Promise<unknown>;
  close(): Promise<void>;
}

/** Credentials whose death the broker is told of (see the contract: the others would close the live session). */
const WITHDRAWN_AT_THE_BROKER: ReadonlySet<WithdrawReason> = new Set([
  'invalidated',
  'shutdown',
  'session-ended',
]);
const WITHDRAWN_PASSWORD_BYTES = 32;

export async function startBrokerDynsec(options: BrokerDynsecOptions): Promise<BrokerDynsec | undefined> {
  const timeoutMs = options.timeoutMs ?? 3_000;
  let admin: DynsecAdmin;
  try {
    admin = await connectDynsecAdmin({
      url: options.url,
      ca: options.caCert,
      cert: options.tls.cert,
      key: options.tls.key,
      connectTimeoutMs: timeoutMs,
      answerTimeoutMs: timeoutMs,
    });
  } catch (error) {
    options.note(
      `broker dynamic security is off: no admin session with ${options.url} (${(error as Error).message}); ` +
        'disable and remove cannot close sessions at that broker',
    );
    return undefined;
  }
  const once = async (): Promise<boolean> => {
    try {
      const sent = await admin.reconcile(options.devices());
      if (sent.length > 0) options.note(`broker dynamic security: ${sent.length} change(s) applied`);
      return true;
    } catch (error) {
      options.note(`broker dynamic security not in step with the devices file: ${(error as Error).message}`);
      return false;
    }
  };
  const sync = coalescedSync(once);
  if (!(await sync())) {
    options.note(
      `broker dynamic security is off: ${options.url} did not take the commands (load the plugin with the ` +
        'dynamic-security.json of docs/local.md, --broker)',
    );
    await admin.close();
    return undefined;
  }
  admin.onConnect(() => void sync());
  const setPassword = async (username: string, password: string): Promise<void> => {
    await admin.send([{ command: 'setClientPassword', username, password }]);
  };
  return {
    sync,
    credentials: Object.freeze({
      install: (deviceId: string, credential: string) => setPassword(deviceId, credential),
      withdraw: async (deviceId: string, reason: WithdrawReason) => {
        if (!WITHDRAWN_AT_THE_BROKER.has(reason)) return;
        await setPassword(deviceId, randomBytes(WITHDRAWN_PASSWORD_BYTES).toString('hex'));
      },
    }),
    subscribe: (topic, handler) => admin.subscribe(topic, handler),
    grantLogAccess: () => admin.send(grantControllerLog()),
    close: () => admin.close(),
  };
}

export async function writeBrokerFiles(
  dir: string,
  broker: { readonly host: string; readonly port: number },
  tlsDir: string,
  /** The plain profile's listener of that broker (`--broker-plain`). */
  plain?: { readonly host: string; readonly port: number },
): Promise<{ conf: string; dynsec: string }> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const conf = join(dir, 'mosquitto.conf');
  const dynsec = join(dir, 'dynamic-security.json');
  const plugin = debianDynsecPlugin(process.arch === 'arm64' ? 'aarch64-linux-gnu' : 'x86_64-linux-gnu');
  await writeFile(
    conf,
    mosquittoConf({
      port: broker.port,
      bindAddress: broker.host,
      tlsDir,
      dynamicSecurity: { plugin, configFile: dynsec },
      ...(plain === undefined ? {} : { plainListener: { port: plain.port, bindAddress: plain.host } }),
      // Its files are in the data directory (0700, its owner's): a root `up`'s broker stays root rather than
      // dropping to `mosquitto`, which could not read them (docs/local.md).
      ...(process.getuid?.() === 0 ? { user: 'root' } : {}),
    }),
    { mode: 0o600 },
  );
  await writeFile(dynsec, dynamicSecurityConfig(), { mode: 0o600, flag: 'wx' }).catch(
    (error: NodeJS.ErrnoException) => {
      if (error.code !== 'EEXIST') throw error;
    },
  );
  return { conf, dynsec };
}
