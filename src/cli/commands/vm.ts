/** `microagent kernel install|build|show` and `microagent doctor`: thin wrappers over src/vm. */
import { buildKernel, installKernel, loadKernel, runDoctor, type InstalledKernel } from '../../vm/index.js';
import { parseCommandArgs, usageError, type Command } from '../command.js';

const kernelInstall: Command = {
  name: 'kernel install',
  summary: "Install the guest kernel from Debian's linux-image-cloud-amd64 (via apt) or from --from PATH (.deb, directory, or kernel image)",
  usage: '[--from PATH]',
  async run(args, ctx) {
    const { values, positionals } = parseCommandArgs(this, args, { from: { type: 'string' } });
    if (positionals.length > 0) throw usageError(`kernel install: unexpected argument ${positionals[0]}`, `usage: microagent kernel install ${this.usage}`);
    ctx.out.info(values.from === undefined ? 'downloading linux-image-cloud-amd64 with apt-get...' : `installing kernel from ${values.from}...`);
    const kernel = await installKernel({ stateDir: ctx.stateDir, ...(values.from !== undefined ? { from: values.from } : {}) });
    return { result: kernel, human: installedText(kernel) };
  },
};

function installedText(kernel: InstalledKernel): string {
  return `installed kernel ${kernel.version} (${kernel.source})\n  ${kernel.dir}\n  modules: ${kernel.modules.join(' ') || 'none (drivers built in)'}`;
}

const kernelBuild: Command = {
  name: 'kernel build',
  summary: "Build the microVM guest kernel from the distribution's linux-source package (boots about twice as fast as a distribution kernel) and make it the default",
  usage: '[--source TARBALL] [--jobs N]',
  async run(args, ctx) {
    const { values, positionals } = parseCommandArgs(this, args, { source: { type: 'string' }, jobs: { type: 'string' } });
    if (positionals.length > 0) throw usageError(`kernel build: unexpected argument ${positionals[0]}`, `usage: microagent kernel build ${this.usage}`);
    const jobs = values.jobs === undefined ? undefined : Number(values.jobs);
    if (jobs !== undefined && !(Number.isInteger(jobs) && jobs > 0)) {
      throw usageError(`kernel build: --jobs ${values.jobs} is not a positive whole number`, `usage: microagent kernel build ${this.usage}`);
    }
    const kernel = await buildKernel({
      stateDir: ctx.stateDir,
      onProgress: (line) => ctx.out.info(line),
      ...(values.source !== undefined ? { source: values.source } : {}),
      ...(jobs !== undefined ? { jobs } : {}),
    });
    return { result: kernel, human: installedText(kernel) };
  },
};

const kernelShow: Command = {
  name: 'kernel show',
  summary: 'Show the installed guest kernel after verifying its manifest',
  usage: '',
  async run(args, ctx) {
    parseCommandArgs(this, args, {}, false);
    const kernel = loadKernel(ctx.stateDir);
    return { result: kernel, human: `${kernel.version} (${kernel.source}), manifest verified\n  ${kernel.dir}` };
  },
};

const doctor: Command = {
  name: 'doctor',
  summary: 'Check that this host can run workspaces (QEMU, KVM probe, e2fsprogs, kernel, gcc, socat); --fix installs what it can',
  usage: '[--fix]',
  async run(args, ctx) {
    const { values } = parseCommandArgs(this, args, { fix: { type: 'boolean' } }, false);
    const report = await runDoctor({ stateDir: ctx.stateDir, fix: values.fix === true });
    const lines = report.checks.map((c) =>
      // A passing check may still carry advice (TCG works, only slower): a hint, not a fix.
      `${c.ok ? 'ok  ' : 'FAIL'} ${c.name.padEnd(12)} ${c.detail}${c.remediation ? `\n       ${c.ok ? 'hint' : 'fix'}: ${c.remediation}` : ''}`,
    );
    for (const f of report.fixed) lines.push(`fixed: ${f}`);
    return { result: report, human: lines.join('\n'), exitCode: report.ok ? 0 : 1 };
  },
};

export const commands: readonly Command[] = [kernelInstall, kernelBuild, kernelShow, doctor];
