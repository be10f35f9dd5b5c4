/**
 * The import rules (docs/architecture.md), checked by `npm test` (`npm run lint:imports`). A violation names the
 * rule and the two files. Paths are relative to the repository root.
 */
const RUNTIME = '^(spa|functions|device-client|cli)/';
const NODE_BUILTINS_PURE = ['^(node:)?crypto$', '^(node:)?path$'];

module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      severity: 'error',
      comment: 'A cycle makes two modules one: break it by moving the shared part down a layer.',
      from: {},
      to: { circular: true },
    },
    {
      name: 'spa-is-pure',
      severity: 'error',
      comment: 'spa/ (the wire protocol) imports node:crypto and itself only.',
      from: { path: '^spa/' },
      to: { pathNot: ['^spa/', '^(node:)?crypto$'] },
    },
    {
      name: 'core-imports-only-spa',
      severity: 'error',
      comment:
        'functions/core/ (the shared vocabulary) imports spa/ and itself, zod for schemas and node:path; no I/O.',
      from: { path: '^functions/core/' },
      to: { pathNot: ['^functions/core/', '^spa/', '^node_modules/zod/', ...NODE_BUILTINS_PURE] },
    },
    {
      name: 'device-library-stands-alone',
      severity: 'error',
      comment:
        'device-client/ (what a device program installs) imports spa/, functions/core/ and its own npm dependencies only.',
      from: { path: '^device-client/' },
      to: { path: '^(functions/(?!core/)|cli/|infra/|bench/|test/)' },
    },
    {
      name: 'device-library-npm-dependencies',
      severity: 'error',
      comment:
        'The device library depends on mqtt and what the protocol needs, nothing of the CDK, the SDK or aedes.',
      from: { path: '^device-client/' },
      to: { dependencyTypes: ['npm', 'npm-dev'], pathNot: ['^node_modules/(mqtt|zod|write-file-atomic)/'] },
    },
    {
      name: 'device-examples-use-the-package',
      severity: 'error',
      comment:
        'device-client/examples/ (run by docs and tests where @blackcloud/device is installed) imports the package entry (device-client/index.ts) and node: builtins only, as a device program does.',
      from: { path: '^device-client/examples/' },
      to: {
        pathNot: ['^device-client/index\\.ts$', '^node:'],
        dependencyTypes: ['local', 'npm', 'npm-dev', 'aliased', 'aliased-tsconfig'],
      },
    },
    {
      name: 'runtime-never-imports-infra-bench-test',
      severity: 'error',
      comment:
        'Runtime code (spa, functions, device-client, cli) never imports infra/, bench/, test/ or packaging/.',
      from: { path: RUNTIME },
      to: { path: '^(infra|bench|test|packaging)/' },
    },
    {
      name: 'packaging-bundles-by-path',
      severity: 'error',
      comment:
        'packaging/ (the build of the npm packages) names the sources it bundles by path; it imports none of them.',
      from: { path: '^packaging/' },
      to: { path: '^(spa|functions|device-client|cli|infra|bench|test)/' },
    },
    {
      name: 'infra-imports-only-core',
      severity: 'error',
      comment:
        'infra/ imports functions/core/ (the deployment contract) only; the broker host renders its Mosquitto config with the one generator (functions/broker/mosquitto-config.ts), the receiver host its kernel pre-filter with the one ruleset (functions/local/prefilter-ruleset.ts). Runtime code reaches the stack as bundled assets (entry paths), not imports.',
      from: { path: '^infra/' },
      to: {
        path: '^(spa|functions|device-client|cli)/',
        pathNot: [
          '^functions/core/',
          '^functions/broker/mosquitto-config\\.ts$',
          '^functions/local/prefilter-ruleset\\.ts$',
        ],
      },
    },
    {
      name: 'engine-has-no-adapters',
      severity: 'error',
      comment:
        'functions/receiver/ and functions/key-rotation/ are the engine: adapters come in through functions/core/ interfaces.',
      from: { path: '^functions/(receiver|key-rotation)/' },
      to: { path: '^(functions/(aws|local|broker|pki|revoker|sweeper)|cli|device-client)/' },
    },
    {
      name: 'functions-never-import-the-cli',
      severity: 'error',
      comment: 'The operator CLI (cli/) composes functions/; never the other way round.',
      from: { path: '^functions/' },
      to: { path: '^(cli|device-client)/' },
    },
    {
      name: 'aws-and-local-are-separate',
      severity: 'error',
      comment: 'The AWS and local adapter families never import each other.',
      from: { path: '^functions/(aws|local)/' },
      to: { path: '^functions/(aws|local)/', pathNot: '^functions/$1/' },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^(node_modules|cdk\\.out|dist|coverage)/' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: {
      exportsFields: ['exports'],
      conditionNames: ['import', 'require', 'node', 'default'],
    },
  },
};
