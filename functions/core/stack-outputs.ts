/**
 * The stack's CloudFormation output keys: the contract with the `blackcloud` CLI, which finds a deployed black
 * cloud through `DescribeStacks` outputs (issue "Fleet operations"). Keys are stable; add, never rename.
 */
export const STACK_OUTPUTS = Object.freeze({
  receiverAddress: 'ReceiverAddress',
  receiverAddresses: 'ReceiverAddresses',
  spaPort: 'SpaPort',
  brokerAddress: 'BrokerAddress',
  brokerPort: 'BrokerPort',
  brokerPrivateAddress: 'BrokerPrivateAddress',
  brokerTlsServerName: 'BrokerTlsServerName',
  brokerTlsSecretName: 'BrokerTlsSecretName',
  controllerTlsSecretName: 'ControllerTlsSecretName',
  brokerSecurityGroupIds: 'BrokerSecurityGroupIds',
  receiverSecurityGroupId: 'ReceiverSecurityGroupId',
  nonceTable: 'NonceTableName',
  devicesTable: 'DevicesTableName',
  grantsTable: 'GrantsTableName',
  revokeQueueUrl: 'RevokeQueueUrl',
  revokeDeadLetterQueueUrl: 'RevokeDeadLetterQueueUrl',
  fleetThingGroup: 'FleetThingGroupName',
  deviceThingType: 'DeviceThingTypeName',
  auditLogGroup: 'AuditLogGroupName',
  alarmTopicArn: 'AlarmTopicArn',
  dashboardName: 'DashboardName',
  grantSeconds: 'GrantSeconds',
  clockWindowSeconds: 'ClockWindowSeconds',
  keyRotationHours: 'KeyRotationHours',
  region: 'Region',
  /** Only when the plain listener is on (infra `plainListener`): the broker's plain MQTT port. */
  brokerPlainPort: 'BrokerPlainPort',
});

export type StackOutputKey = (typeof STACK_OUTPUTS)[keyof typeof STACK_OUTPUTS];
