import { execFile } from 'node:child_process';
import { AgentRegistry, resolveCommand } from './profiles';

export interface AgentStatus {
  available: boolean;
  version?: string;
  command?: string;
  message?: string;
}

const VERSION_TIMEOUT_MS = 5_000;

function versionOf(file: string): Promise<string | undefined> {
  return new Promise((resolve) => {
    execFile(file, ['--version'], { timeout: VERSION_TIMEOUT_MS, env: { ...process.env, DISABLE_AUTOUPDATER: '1' } }, (err, stdout) => {
      if (err) return resolve(undefined);
      const line = stdout.toString().trim().split('\n')[0];
      resolve(line || undefined);
    });
  });
}

/** Availability and version of each named agent, without starting a session. */
export async function probeAgents(registry: AgentRegistry, names: string[], withDetail = false): Promise<Record<string, AgentStatus>> {
  const out: Record<string, AgentStatus> = {};
  await Promise.all(
    names.map(async (name) => {
      const profile = registry.get(name);
      try {
        const file = resolveCommand(profile);
        out[name] = { available: true, ...(profile.kind === 'generic' ? {} : { version: await versionOf(file) }) };
        if (withDetail) out[name].command = file;
      } catch (err) {
        // Unauthenticated callers see no paths (the message names PATH's folders).
        out[name] = withDetail ? { available: false, message: (err as Error).message } : { available: false };
      }
    }),
  );
  return out;
}
