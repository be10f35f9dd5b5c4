/**
 * Commands of Mosquitto's dynamic-security plugin (`$CONTROL/dynamic-security/v1`) as pure values, the parser of
 * its answers, and the device lifecycle as command lists. No I/O: dynsec-admin.ts sends them.
 *
 * Contract:
 * - `encodeCommands(commands, correlation)` is the JSON payload `{"commands":[...]}`, each command tagged with
 *   `correlationData` `<correlation>:<index>`; `parseResponses(bytes)` takes untrusted bytes and never throws: a
 *   list of `{ command, error?, correlationData?, data? }`, or a reason.
 * - Device lifecycle (each device is client `<id>` with the one role `device:<id>`, dynsec-policy.ts):
 *   `enrolDevice` creates role and client (a disabled device gets its client without the role, disabled);
 *   `disableDevice` takes the role away, then disables the client (Mosquitto closes its sessions);
 *   `enableDevice` enables the client and gives the role back; `removeDevice` deletes the client (its sessions are
 *   closed) and its role. Taking the role away matters on Mosquitto 2.0.11: with `use_identity_as_username` the
 *   plugin neither refuses the CONNECT of a disabled or unknown client nor checks the disabled flag in its ACL
 *   checks (docs/fleet.md), so a role-less client can connect but do nothing.
 * - `planReconcile(state, devices)` is the command list that turns the broker's clients and roles (as listed by
 *   `listClients` / `listRoles`, parsed by `parseBrokerState`) into exactly the devices given: missing devices
 *   enrolled, clients of devices no longer there removed, enabled flags applied, device roles whose ACLs differ
 *   from `deviceRole` rebuilt. Clients and roles that are not devices' (the controller, anything an operator
 *   added by hand) are left alone. An empty list means the broker already matches.
 */
import { ok, type Result, reject } from '../../spa/result.ts';
import { CONTROLLER_IDENTITY } from '../core/topics.ts';
import {
  controllerLogAcls,
  DYNSEC_TOPIC_ROOT,
  type DynsecAcl,
  type DynsecRole,
  deviceOfRoleName,
  deviceRole,
  deviceRoleName,
} from './dynsec-policy.ts';

export const DYNSEC_COMMAND_TOPIC = `${DYNSEC_TOPIC_ROOT}/v1`;
export const DYNSEC_RESPONSE_TOPIC = `${DYNSEC_COMMAND_TOPIC}/response`;

export type DynsecCommand =
  | {
      readonly command: 'createClient';
      readonly username: string;
      readonly roles?: readonly { rolename: string }[];
    }
  | {
      readonly command: 'deleteClient' | 'enableClient' | 'disableClient' | 'getClient';
      readonly username: string;
    }
  | {
      readonly command: 'addClientRole' | 'removeClientRole';
      readonly username: string;
      readonly rolename: string;
    }
  | {
      /** The password is a secret (the plain profile's credential): this command is never logged. */
      readonly command: 'setClientPassword';
      readonly username: string;
      readonly password: string;
    }
  | { readonly command: 'createRole'; readonly rolename: string; readonly acls?: readonly DynsecAcl[] }
  | { readonly command: 'deleteRole' | 'getRole'; readonly rolename: string }
  | ({ readonly command: 'addRoleACL'; readonly rolename: string } & DynsecAcl)
  | {
      readonly command: 'removeRoleACL';
      readonly rolename: string;
      readonly acltype: string;
      readonly topic: string;
    }
  | { readonly command: 'listClients' | 'listRoles'; readonly verbose: boolean; readonly count: number }
  | {
      /** The plain profile's one-time credential (or its random replacement). Never logged. */
      readonly command: 'setClientPassword';
      readonly username: string;
      readonly password: string;
    };

export interface DynsecResponse {
  readonly command: string;
  readonly error?: string;
  readonly correlationData?: string;
  readonly data?: unknown;
}

export const createClient = (username: string, rolenames: readonly string[] = []): DynsecCommand => ({
  command: 'createClient',
  username,
  roles: rolenames.map((rolename) => ({ rolename })),
});
export const deleteClient = (username: string): DynsecCommand => ({ command: 'deleteClient', username });
export const enableClient = (username: string): DynsecCommand => ({ command: 'enableClient', username });
export const disableClient = (username: string): DynsecCommand => ({ command: 'disableClient', username });
export const addClientRole = (username: string, rolename: string): DynsecCommand => ({
  command: 'addClientRole',
  username,
  rolename,
});
export const removeClientRole = (username: string, rolename: string): DynsecCommand => ({
  command: 'removeClientRole',
  username,
  rolename,
});
/**
 * Sets the password a client logs in with where no certificate is used (the plain profile's listener). Mosquitto
 * 2.0.11 disconnects every session of the client when it is set (docs/fleet.md, "Plain devices on AWS").
 */
export const setClientPassword = (username: string, password: string): DynsecCommand => ({
  command: 'setClientPassword',
  username,
  password,
});
export const createRole = (role: DynsecRole): DynsecCommand => ({
  command: 'createRole',
  rolename: role.rolename,
  acls: role.acls,
});
export const deleteRole = (rolename: string): DynsecCommand => ({ command: 'deleteRole', rolename });
export const addRoleAcl = (rolename: string, acl: DynsecAcl): DynsecCommand => ({
  command: 'addRoleACL',
  rolename,
  ...acl,
});
/**
 * Gives the controller's role the broker-log ACLs (dynsec-policy.ts `controllerLogAcls`): for a broker whose
 * dynamic-security file was written before them (the plugin keeps its file across reboots and upgrades).
 */
export function grantControllerLog(controllerIdentity: string = CONTROLLER_IDENTITY): DynsecCommand[] {
  return controllerLogAcls().map((acl) => addRoleAcl(controllerIdentity, acl));
}
/** Every client / role, with details (`count: -1` = no paging). */
export const listClients = (): DynsecCommand => ({ command: 'listClients', verbose: true, count: -1 });
export const listRoles = (): DynsecCommand => ({ command: 'listRoles', verbose: true, count: -1 });

export function enrolDevice(deviceId: string, enabled = true): DynsecCommand[] {
  const role = deviceRole(deviceId);
  if (!enabled) return [createRole(role), createClient(deviceId), disableClient(deviceId)];
  return [createRole(role), createClient(deviceId, [role.rolename])];
}

export function disableDevice(deviceId: string): DynsecCommand[] {
  return [removeClientRole(deviceId, deviceRoleName(deviceId)), disableClient(deviceId)];
}

export function enableDevice(deviceId: string): DynsecCommand[] {
  return [enableClient(deviceId), addClientRole(deviceId, deviceRoleName(deviceId))];
}

export function removeDevice(deviceId: string): DynsecCommand[] {
  return [deleteClient(deviceId), deleteRole(deviceRoleName(deviceId))];
}

export function encodeCommands(commands: readonly DynsecCommand[], correlation: string): string {
  return JSON.stringify({
    commands: commands.map((command, index) => ({ ...command, correlationData: `${correlation}:${index}` })),
  });
}

const isRecord = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

export type ResponseReason = 'not-json' | 'no-responses' | 'bad-response';

export function parseResponses(payload: Uint8Array | string): Result<DynsecResponse[], ResponseReason> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(typeof payload === 'string' ? payload : Buffer.from(payload).toString('utf8'));
  } catch {
    return reject('not-json');
  }
  if (!isRecord(parsed) || !Array.isArray(parsed.responses)) return reject('no-responses');
  const responses: DynsecResponse[] = [];
  for (const item of parsed.responses) {
    if (!isRecord(item) || typeof item.command !== 'string') return reject('bad-response');
    if (item.error !== undefined && typeof item.error !== 'string') return reject('bad-response');
    if (item.correlationData !== undefined && typeof item.correlationData !== 'string')
      return reject('bad-response');
    responses.push({
      command: item.command,
      ...(item.error === undefined ? {} : { error: item.error }),
      ...(item.correlationData === undefined ? {} : { correlationData: item.correlationData }),
      ...(item.data === undefined ? {} : { data: item.data }),
    });
  }
  return ok(responses);
}

/** The broker's dynamic-security state, as far as reconciling devices needs it. */
export interface BrokerState {
  readonly clients: readonly {
    readonly username: string;
    readonly disabled: boolean;
    readonly roles: readonly string[];
  }[];
  readonly roles: readonly { readonly rolename: string; readonly acls: readonly DynsecAcl[] }[];
}

/** `data` of the `listClients` and `listRoles` answers (verbose) → BrokerState; undefined when malformed. */
export function parseBrokerState(clientsData: unknown, rolesData: unknown): BrokerState | undefined {
  if (!isRecord(clientsData) || !Array.isArray(clientsData.clients)) return undefined;
  if (!isRecord(rolesData) || !Array.isArray(rolesData.roles)) return undefined;
  const clients: BrokerState['clients'][number][] = [];
  for (const client of clientsData.clients) {
    if (!isRecord(client) || typeof client.username !== 'string') return undefined;
    const roles = Array.isArray(client.roles) ? client.roles : [];
    clients.push({
      username: client.username,
      disabled: client.disabled === true,
      roles: roles.flatMap((role) =>
        isRecord(role) && typeof role.rolename === 'string' ? [role.rolename] : [],
      ),
    });
  }
  const roles: BrokerState['roles'][number][] = [];
  for (const role of rolesData.roles) {
    if (!isRecord(role) || typeof role.rolename !== 'string') return undefined;
    const acls = Array.isArray(role.acls) ? role.acls : [];
    roles.push({
      rolename: role.rolename,
      acls: acls.flatMap((acl) =>
        isRecord(acl) && typeof acl.acltype === 'string' && typeof acl.topic === 'string'
          ? [{ acltype: acl.acltype as DynsecAcl['acltype'], topic: acl.topic, allow: acl.allow === true }]
          : [],
      ),
    });
  }
  return { clients, roles };
}

const aclKey = (acl: DynsecAcl) => `${acl.acltype}\u0000${acl.topic}\u0000${acl.allow}`;

function sameAcls(a: readonly DynsecAcl[], b: readonly DynsecAcl[]): boolean {
  const left = new Set(a.map(aclKey));
  const right = new Set(b.map(aclKey));
  return left.size === right.size && [...left].every((key) => right.has(key));
}

export function planReconcile(
  state: BrokerState,
  devices: readonly { readonly id: string; readonly enabled: boolean }[],
  controllerIdentity: string = CONTROLLER_IDENTITY,
): DynsecCommand[] {
  const commands: DynsecCommand[] = [];
  const wanted = new Map(devices.filter((d) => d.id !== controllerIdentity).map((d) => [d.id, d.enabled]));
  const clients = new Map(state.clients.map((client) => [client.username, client]));
  const roles = new Map(state.roles.map((role) => [role.rolename, role]));
  // Devices gone: a client holding a device role (or a device role without its device) that is not wanted.
  for (const client of state.clients) {
    if (client.username === controllerIdentity || wanted.has(client.username)) continue;
    if (
      client.roles.includes(deviceRoleName(client.username)) ||
      roles.has(deviceRoleName(client.username))
    ) {
      commands.push(deleteClient(client.username));
    }
  }
  for (const role of state.roles) {
    const owner = deviceOfRoleName(role.rolename);
    if (owner !== undefined && !wanted.has(owner)) commands.push(deleteRole(role.rolename));
  }
  for (const [id, enabled] of wanted) {
    const role = deviceRole(id);
    const client = clients.get(id);
    const existingRole = roles.get(role.rolename);
    if (existingRole === undefined) {
      commands.push(createRole(role));
    } else if (!sameAcls(existingRole.acls, role.acls)) {
      // Rebuilt rather than patched: deleting the role also takes it from the client, added back below.
      commands.push(deleteRole(role.rolename), createRole(role));
    }
    const rebuilt = existingRole !== undefined && !sameAcls(existingRole.acls, role.acls);
    if (client === undefined) {
      commands.push(
        ...(enabled ? [createClient(id, [role.rolename])] : [createClient(id), disableClient(id)]),
      );
      continue;
    }
    const hasRole = client.roles.includes(role.rolename) && !rebuilt;
    if (enabled) {
      if (client.disabled) commands.push(enableClient(id));
      if (!hasRole) commands.push(addClientRole(id, role.rolename));
    } else {
      if (hasRole) commands.push(removeClientRole(id, role.rolename));
      if (!client.disabled) commands.push(disableClient(id));
    }
  }
  return commands;
}
