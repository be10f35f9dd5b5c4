/**
 * The plain profile's credentials as dynamic-security commands (functions/broker/dynsec-credentials.ts): install
 * sends the credential as the device client's password; withdraw sends a fresh random value each time, never the
 * credential; the admin session's refusal reaches the caller. Pure (a recording sender); the real broker is
 * test/functions/aws/plain-profile.test.ts.
 */
import { describe, expect, it } from 'vitest';
import type { DynsecCommand } from '../../../functions/broker/dynsec-commands.ts';
import { dynsecCredentialInstaller } from '../../../functions/broker/dynsec-credentials.ts';

function recorder() {
  const sent: DynsecCommand[][] = [];
  return {
    sent,
    admin: {
      send: async (commands: readonly DynsecCommand[]) => {
        sent.push([...commands]);
        return commands.map((command) => ({ command: command.command }));
      },
    },
  };
}

describe('dynsecCredentialInstaller', () => {
  it('GIVEN a credential WHEN installed THEN it becomes the device client password, in one command', async () => {
    const { sent, admin } = recorder();
    await dynsecCredentialInstaller(admin).install('tiny-1', 'a'.repeat(64));
    expect(sent).toEqual([[{ command: 'setClientPassword', username: 'tiny-1', password: 'a'.repeat(64) }]]);
  });

  it('GIVEN withdrawals WHEN sent THEN each password is a fresh 64-hex random value, never the credential', async () => {
    const { sent, admin } = recorder();
    const installer = dynsecCredentialInstaller(admin);
    await installer.install('tiny-1', 'b'.repeat(64));
    await installer.withdraw('tiny-1');
    await installer.withdraw('tiny-1');
    const passwords = sent.flat().map((command) => (command as { password: string }).password);
    expect(passwords[1]).toMatch(/^[0-9a-f]{64}$/);
    expect(passwords[2]).toMatch(/^[0-9a-f]{64}$/);
    expect(new Set(passwords).size).toBe(3);
  });

  it('GIVEN the plugin refuses WHEN installing THEN the refusal rejects the call', async () => {
    const installer = dynsecCredentialInstaller({
      send: () =>
        Promise.reject(new Error('the dynamic-security plugin refused setClientPassword (Client not found)')),
    });
    await expect(installer.install('ghost', 'c'.repeat(64))).rejects.toThrow(/Client not found/);
  });

  it('GIVEN a removed client WHEN withdrawing THEN it resolves (no password left); any other refusal rejects', async () => {
    const refusing = (error: string) =>
      dynsecCredentialInstaller({
        send: () =>
          Promise.reject(
            Object.assign(new Error(`the dynamic-security plugin refused setClientPassword (${error})`), {
              failures: [{ command: 'setClientPassword', error }],
            }),
          ),
      });
    await expect(refusing('Client not found').withdraw('gone-1')).resolves.toBeUndefined();
    await expect(refusing('Internal error').withdraw('tiny-1')).rejects.toThrow(/Internal error/);
    await expect(refusing('Client not found').install('gone-1', 'd'.repeat(64))).rejects.toThrow(/not found/);
  });
});
