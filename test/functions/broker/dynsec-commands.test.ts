/** The dynamic-security commands, answers, device roles and the reconcile plan, as pure values. */
import { describe, expect, it } from 'vitest';
import {
  disableDevice,
  encodeCommands,
  enrolDevice,
  parseBrokerState,
  parseResponses,
  planReconcile,
  removeDevice,
} from '../../../functions/broker/dynsec-commands.ts';
import { controllerRole, deviceRole, deviceRoleName } from '../../../functions/broker/dynsec-policy.ts';
import { dynamicSecurityConfig, mosquittoConf } from '../../../functions/broker/mosquitto-config.ts';
import { CONTROLLER_IDENTITY } from '../../../functions/core/topics.ts';

describe('device roles', () => {
  it('allow exactly the device tree and its key topics', () => {
    expect(deviceRole('dev-1')).toEqual({
      rolename: 'device:dev-1',
      acls: [
        { acltype: 'publishClientSend', topic: 'blackcloud/devices/dev-1/#', allow: true },
        { acltype: 'subscribePattern', topic: 'blackcloud/devices/dev-1/#', allow: true },
        { acltype: 'publishClientReceive', topic: 'blackcloud/devices/dev-1/#', allow: true },
        { acltype: 'subscribeLiteral', topic: 'blackcloud/keys/dev-1', allow: true },
        { acltype: 'publishClientReceive', topic: 'blackcloud/keys/dev-1', allow: true },
        { acltype: 'publishClientSend', topic: 'blackcloud/keys/dev-1/ack', allow: true },
      ],
    });
  });

  it.each(['a/b', '+', '#', '', CONTROLLER_IDENTITY, 'x'.repeat(65)])('refuse the id %j', (id) => {
    expect(() => deviceRole(id)).toThrow(TypeError);
  });
});

describe('the initial JSON file and the configuration', () => {
  it('holds the controller as admin and each device with its role; a disabled device without it', () => {
    const file = JSON.parse(
      dynamicSecurityConfig({
        devices: [
          { id: 'dev-1', enabled: true },
          { id: 'dev-2', enabled: false },
        ],
      }),
    );
    expect(file.clients).toEqual([
      {
        username: CONTROLLER_IDENTITY,
        textname: 'blackcloud controller',
        roles: [{ rolename: CONTROLLER_IDENTITY }],
      },
      { username: 'dev-1', roles: [{ rolename: 'device:dev-1' }] },
      { username: 'dev-2', disabled: true },
    ]);
    expect(file.roles).toEqual([controllerRole(), deviceRole('dev-1'), deviceRole('dev-2')]);
    expect(file.defaultACLAccess).toEqual({
      publishClientSend: false,
      publishClientReceive: false,
      subscribe: false,
      unsubscribe: true,
    });
  });

  it('loads the plugin instead of the ACL file, and wants exactly one of them', () => {
    const conf = mosquittoConf({
      port: 8883,
      tlsDir: '/t',
      dynamicSecurity: { plugin: '/p.so', configFile: '/d.json' },
    });
    expect(conf).toContain('plugin /p.so\nplugin_opt_config_file /d.json\n');
    expect(conf).toContain('use_identity_as_username true');
    expect(conf).not.toContain('acl_file');
    expect(() => mosquittoConf({ port: 1, tlsDir: '/t' })).toThrow(/exactly one/);
  });

  it('publishes its log on $SYS/broker/log/<type> with the default types, to stderr unless told otherwise, and only the controller reads it', () => {
    const dynamicSecurity = { plugin: '/p.so', configFile: '/d.json' };
    const conf = mosquittoConf({ port: 8883, tlsDir: '/t', dynamicSecurity });
    expect(conf).toContain(
      '\nlog_dest stderr\nlog_dest topic\nlog_type error\nlog_type warning\nlog_type notice\nlog_type information\n',
    );
    const fragment = mosquittoConf({ port: 8883, tlsDir: '/t', dynamicSecurity, stderrLog: false });
    expect(fragment).toContain('\nlog_dest topic\n');
    expect(fragment).not.toContain('log_dest stderr');
    const logAcls = (acls: readonly { acltype: string; topic: string }[]) =>
      acls.filter((acl) => acl.topic.startsWith('$SYS')).map((acl) => `${acl.acltype} ${acl.topic}`);
    expect(logAcls(controllerRole().acls)).toEqual([
      'subscribePattern $SYS/broker/log/#',
      'publishClientReceive $SYS/broker/log/#',
    ]);
    expect(logAcls(deviceRole('dev-1').acls)).toEqual([]);
  });
});

describe('commands and answers', () => {
  it('tags each command with its batch and index', () => {
    expect(JSON.parse(encodeCommands(disableDevice('d'), 'b1'))).toEqual({
      commands: [
        { command: 'removeClientRole', username: 'd', rolename: 'device:d', correlationData: 'b1:0' },
        { command: 'disableClient', username: 'd', correlationData: 'b1:1' },
      ],
    });
    expect(removeDevice('d').map((c) => c.command)).toEqual(['deleteClient', 'deleteRole']);
    expect(enrolDevice('d', false).map((c) => c.command)).toEqual([
      'createRole',
      'createClient',
      'disableClient',
    ]);
  });

  it('parses answers and refuses anything else without throwing', () => {
    expect(
      parseResponses(
        '{"responses":[{"command":"deleteClient","error":"Client not found","correlationData":"b:0"}]}',
      ),
    ).toEqual({
      ok: true,
      value: [{ command: 'deleteClient', error: 'Client not found', correlationData: 'b:0' }],
    });
    for (const junk of [
      '',
      'nope',
      '[]',
      '{"responses":[1]}',
      '{"responses":[{"command":1}]}',
      '{"responses":[{"command":"x","error":2}]}',
    ]) {
      expect(parseResponses(junk).ok).toBe(false);
    }
    expect(parseBrokerState({ clients: [{}] }, { roles: [] })).toBeUndefined();
  });
});

describe('planReconcile', () => {
  const state = parseBrokerState(
    {
      clients: [
        { username: CONTROLLER_IDENTITY, roles: [{ rolename: CONTROLLER_IDENTITY }] },
        { username: 'kept', roles: [{ rolename: 'device:kept' }] },
        { username: 'gone', roles: [{ rolename: 'device:gone' }] },
        { username: 'off', disabled: true, roles: [] },
        { username: 'operator-tool', roles: [] },
      ],
    },
    {
      roles: [
        controllerRole(),
        deviceRole('kept'),
        deviceRole('gone'),
        deviceRole('off'),
        { rolename: 'device:kept2', acls: [{ acltype: 'subscribePattern', topic: '#', allow: true }] },
      ],
    },
  )!;

  it('enrols, removes, enables and disables to match, and leaves what is not a device alone', () => {
    const plan = planReconcile(state, [
      { id: 'kept', enabled: false },
      { id: 'off', enabled: true },
      { id: 'new', enabled: true },
      { id: 'kept2', enabled: true },
    ]);
    expect(plan).toEqual([
      { command: 'deleteClient', username: 'gone' },
      { command: 'deleteRole', rolename: 'device:gone' },
      { command: 'removeClientRole', username: 'kept', rolename: 'device:kept' },
      { command: 'disableClient', username: 'kept' },
      { command: 'enableClient', username: 'off' },
      { command: 'addClientRole', username: 'off', rolename: 'device:off' },
      { command: 'createRole', rolename: 'device:new', acls: deviceRole('new').acls },
      { command: 'createClient', username: 'new', roles: [{ rolename: 'device:new' }] },
      { command: 'deleteRole', rolename: 'device:kept2' },
      { command: 'createRole', rolename: 'device:kept2', acls: deviceRole('kept2').acls },
      { command: 'createClient', username: 'kept2', roles: [{ rolename: deviceRoleName('kept2') }] },
    ]);
  });

  it('removes a device role nobody holds, and is otherwise empty when the broker matches', () => {
    expect(
      planReconcile(state, [
        { id: 'kept', enabled: true },
        { id: 'gone', enabled: true },
        { id: 'off', enabled: false },
      ]),
    ).toEqual([{ command: 'deleteRole', rolename: 'device:kept2' }]);
  });
});
