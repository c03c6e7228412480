#!/usr/bin/env -S -u NODE_EXTRA_CA_CERTS MICROAGENT_EXTRA_CA_CERTS=${NODE_EXTRA_CA_CERTS} node
/**
 * `microagent`: the one executable. It finds the command module for the first word, hands it the
 * rest of argv, and prints the result in the chosen output mode. No logic of its own lives here.
 * The shebang hands NODE_EXTRA_CA_CERTS over under another name, so Node does not parse it at start-up
 * and it is read only by a command that opens a TLS connection (src/tls-trust.ts).
 */
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { asMicroagentError } from '../errors.js';
import { closest, usageError, type Command, type CliContext } from './command.js';
import { createOutput, exitCodeFor, printError, printResult, type OutputMode } from './output.js';

/** First word -> module exporting `commands`. Loaded lazily so `microagent audit` never loads QEMU code. */
const MODULES: Record<string, () => Promise<{ commands: readonly Command[] }>> = {
  policy: () => import('./commands/policy.js'),
  audit: () => import('./commands/audit.js'),
  ca: () => import('./commands/ca.js'),
  proxy: () => import('./commands/proxy.js'),
  dns: () => import('./commands/dns.js'),
  mediation: () => import('./commands/mediation.js'),
  vm: () => import('./commands/vm.js'),
  run: () => import('./commands/run.js'),
  workspace: () => import('./commands/workspace.js'),
};

/** Words registered by modules that own several top-level verbs (the VM lifecycle). */
const ALIASES: Record<string, string> = Object.fromEntries([
  ...['kernel', 'doctor'].map((v) => [v, 'vm']),
  ...['create'].map((v) => [v, 'run']),
  ...['start', 'exec', 'connect', 'halt', 'pause', 'resume', 'stop', 'kill', 'quarantine', 'delete', 'status', 'stats', 'cp', 'list', 'ps', 'events', 'logs', 'egress', 'wait', 'gc'].map((v) => [v, 'workspace']),
]);

interface GlobalOptions {
  mode: OutputMode;
  stateDir: string;
  rest: string[];
}

function parseGlobals(argv: readonly string[]): GlobalOptions {
  let mode: OutputMode = process.env['MICROAGENT_MODE'] === 'ax' ? 'ax' : 'ux';
  let stateDir = process.env['MICROAGENT_STATE_DIR'] ?? join(homedir(), '.microagent');
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (arg === '--') {
      rest.push(...argv.slice(i));
      break;
    }
    if (arg === '--json') {
      if (mode !== 'ax') mode = 'json';
    } else if (arg === '--mode=ax' || arg === '--mode=ux') {
      mode = arg === '--mode=ax' ? 'ax' : 'ux';
    } else if (arg.startsWith('--state-dir=')) {
      stateDir = arg.slice('--state-dir='.length);
    } else if (arg === '--state-dir') {
      stateDir = argv[++i] ?? stateDir;
    } else {
      rest.push(arg);
    }
  }
  return { mode, stateDir, rest };
}

function helpText(commands: readonly Command[]): string {
  return commands.map((c) => `  ${`microagent ${c.name} ${c.usage}`.trimEnd()}\n      ${c.summary}`).join('\n');
}

const VERSION_HELP = '  microagent version\n      Print the version of microagent (also --version)';

/** The installed package's version, read only when asked for. */
function packageVersion(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

async function allCommands(): Promise<Command[]> {
  const loaded = await Promise.all(Object.values(MODULES).map((load) => load()));
  return loaded.flatMap((m) => m.commands);
}

const HELP_WORDS = new Set(['help', '--help', '-h']);

/** A command and its arguments, or a group asked for its help (`microagent kernel --help`). */
type Found = { command: Command; args: string[] } | { group: string; commands: readonly Command[] };

async function findCommand(words: readonly string[]): Promise<Found> {
  const first = words[0];
  const moduleName = first === undefined ? undefined : (ALIASES[first] ?? first);
  const load = moduleName === undefined ? undefined : MODULES[moduleName];
  if (load === undefined) {
    if (first === undefined) throw usageError('no command given', `run "microagent help" to list the commands:\n${helpText(await allCommands())}`);
    const near = closest(first, [...Object.keys(MODULES).filter((m) => m !== 'vm' && m !== 'workspace'), ...Object.keys(ALIASES), 'help', 'version', '--version']);
    throw usageError(`unknown command "${first}"`, `${near === null ? '' : `did you mean "${near}"? `}run "microagent help" to list the commands`);
  }
  const { commands } = await load();
  // Longest match first: "policy check" before "policy".
  const sorted = [...commands].sort((a, b) => b.name.split(' ').length - a.name.split(' ').length);
  for (const command of sorted) {
    const parts = command.name.split(' ');
    if (parts.every((p, i) => words[i] === p)) return { command, args: words.slice(parts.length) };
  }
  // A module serves several words (`kernel` and `doctor`): a group's help names its own commands.
  const group = commands.filter((c) => c.name.startsWith(`${first} `));
  if (words.length === 2 && HELP_WORDS.has(words[1] as string)) return { group: first as string, commands: group };
  const near = words.length === 1 ? null : closest(`${first} ${words[1]}`, commands.map((c) => c.name));
  throw usageError(
    words.length === 1 ? `"${first}" needs one of its commands` : `unknown command "${words.slice(0, 2).join(' ')}"`,
    `${near === null ? '' : `did you mean "${near}"? `}the ${first} commands are:\n${helpText(group)}`,
  );
}

export async function main(argv: readonly string[]): Promise<number> {
  const globals = parseGlobals(argv);
  const out = createOutput(globals.mode);
  try {
    const words = globals.rest;
    // `microagent help kernel` is `microagent kernel --help`, `help policy check` is `policy check --help`.
    if (words.length >= 2 && HELP_WORDS.has(words[0] as string)) {
      words.shift();
      words.push('--help');
    }
    if (words.length === 0 || HELP_WORDS.has(words[0] as string)) {
      const text = `microagent: egress and mediation for AI-agent sandboxes\n\n${helpText(await allCommands())}\n${VERSION_HELP}`;
      printResult(globals.mode, { commands: [...(await allCommands()).map((c) => c.name), 'version'] }, text);
      return 0;
    }
    if (words[0] === 'version' || words[0] === '--version' || words[0] === '-V') {
      const version = packageVersion();
      printResult(globals.mode, { version }, `microagent ${version}`);
      return 0;
    }
    const found = await findCommand(words);
    if ('group' in found) {
      printResult(globals.mode, { commands: found.commands.map((c) => c.name) }, `the ${found.group} commands are:\n${helpText(found.commands)}`);
      return 0;
    }
    const { command, args } = found;
    // Only the command's own options: after "--" a -h belongs to the guest command (ls -h).
    const own = args.includes('--') ? args.slice(0, args.indexOf('--')) : args;
    if (own.includes('--help') || own.includes('-h')) {
      printResult(globals.mode, { usage: `microagent ${command.name} ${command.usage}` },
        `usage: microagent ${command.name} ${command.usage}\n  ${command.summary}`);
      return 0;
    }
    let signalled: (s: NodeJS.Signals) => void = () => {};
    const interrupted = new Promise<NodeJS.Signals>((resolve) => (signalled = resolve));
    let first: NodeJS.Signals | null = null;
    const interrupt = (s: NodeJS.Signals) => {
      first = s;
      signalled(s);
    };
    // The first signal interrupts the command, which decides what to do; a second one (also after
    // the reader went away) ends this process as that signal would.
    const onSignal = (s: NodeJS.Signals) => {
      if (first === null) return interrupt(s);
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      process.kill(process.pid, s);
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    onBrokenPipe = () => {
      if (first === null) interrupt('SIGPIPE');
    };
    const ctx: CliContext = { out, stateDir: globals.stateDir, interrupted };
    // Handed back once the command is over, failed or not: anything it left running must not make
    // the process deaf to SIGTERM.
    const { result, human, exitCode } = await command.run(args, ctx).finally(() => {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    });
    printResult(globals.mode, result, human);
    return exitCode ?? 0;
  } catch (err) {
    const error = asMicroagentError(err);
    printError(globals.mode, error);
    return exitCodeFor(error);
  }
}

// A reader that went away (`microagent ... | head -1`) interrupts the command as SIGINT would, not
// with a stack trace: `run` still kills and removes its workspace (exiting at once would leave the VM
// running), a foreground proxy still flushes its audit log, and a follow stops. Later writes to the
// closed stream are dropped.
let onBrokenPipe: () => void = () => {};
// Output that cannot be written at all (a full disk under `> out.csv`) is an error of its own, said on
// stderr, not a stack trace.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') return onBrokenPipe();
    if (stream === process.stdout) printError('ux', asMicroagentError(err));
    process.exitCode = exitCodeFor(asMicroagentError(err));
    onBrokenPipe();
  });
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`error: ${String(err)}\n`);
    process.exitCode = 1;
  },
);
