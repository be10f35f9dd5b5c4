/**
 * The AWS receiver as a child process for the kill test (test/hostile/faults-aws.test.ts): configuration from the
 * environment (BLACKCLOUD_* as on the instance, BLACKCLOUD_AWS_ENDPOINT = moto), bound to 127.0.0.1 port 0; prints
 * `{"port":N}` once listening, then its JSON lines (audit, metrics). Run: `node <this file>`.
 */
import { loadAwsReceiverConfig } from '../../../functions/aws/receiver-config.ts';
import { startAwsReceiver } from '../../../functions/aws/receiver-main.ts';

const receiver = await startAwsReceiver(loadAwsReceiverConfig(process.env), {
  host: '127.0.0.1',
  port: 0,
  out: process.stdout,
});
process.stdout.write(`${JSON.stringify({ port: receiver.receiver.address.port })}\n`);
