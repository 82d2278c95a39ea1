import { FakeServer } from '../fixtures/fake-model-common';
import { DaemonProcess, startDaemonProcess } from './daemonProcess';
import { cleanupTmp, tmpdir } from './tmp';
import { TestSocket } from './ws';

/**
 * One real daemon (restartable on the same DATA_DIR) driving a real agent
 * against a fake model server: the shared frame of the claude and codex
 * integration tests. `setup` seeds the agent's home and returns its profile.
 */
export class AgentHarness {
  fake!: FakeServer;
  dataDir!: string;
  project!: string;
  private agents: Record<string, unknown> = {};
  private readonly daemons: DaemonProcess[] = [];
  private readonly sockets: TestSocket[] = [];

  constructor(private readonly name: string) {}

  async setup(startFake: () => Promise<FakeServer>, profile: (h: { fake: FakeServer; project: string; home: string }) => Record<string, unknown>): Promise<void> {
    this.fake = await startFake();
    this.dataDir = tmpdir(`${this.name}-data`);
    this.project = tmpdir(`${this.name}-project`);
    const home = tmpdir(`${this.name}-home`);
    this.agents = { [this.name]: profile({ fake: this.fake, project: this.project, home }) };
  }

  async daemon(): Promise<DaemonProcess> {
    const d = await startDaemonProcess({ dataDir: this.dataDir, root: this.project, agents: this.agents, env: { CHAT_WAIT_SECONDS: '60' } });
    this.daemons.push(d);
    return d;
  }

  socket(d: DaemonProcess, path: string): TestSocket {
    const s = d.socket(path);
    this.sockets.push(s);
    return s;
  }

  /** The user messages of the newest conversation request the fake model received. */
  lastMainUserTexts(): string[] {
    const main = this.fake.mainRequests();
    return main[main.length - 1]?.userTexts ?? [];
  }

  async teardown(): Promise<void> {
    for (const s of this.sockets) s.ws.terminate();
    for (const d of this.daemons) await d.kill('SIGTERM');
    await this.fake?.close();
    cleanupTmp();
  }
}
