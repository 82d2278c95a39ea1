import { Config } from '../config/schema';
import { Logger } from '../common/log';
import { SessionStore } from '../store/SessionStore';
import { ChatRequest, ChatResult } from '../sessions/ChatService';
import { Session } from '../sessions/Session';
import { SessionPool } from '../sessions/SessionPool';

/** What the HTTP and WebSocket layers need from the rest: built once by createApp. */
export interface AppContext {
  config: Config;
  logger: Logger;
  pool: SessionPool;
  store: SessionStore;
  token: string;
  startedAt: number;
  version: string;
  connections(): number;
  /** Total RSS of all sessions at the monitor's last tick (null before the first). */
  memoryUsedMB(): number | null;
  sessionView(session: Session): Record<string, unknown>;
  history(session: Session): { offset: number; data: Buffer };
  messages(session: Session): Array<Record<string, unknown>>;
  answer(session: Session, option: unknown): void;
  keepAlive(session: Session, recap: boolean): Promise<{ recap?: string | null; turnId?: string }>;
  revive(session: Session, why: string): Promise<void>;
  chat(req: ChatRequest): Promise<ChatResult>;
  health(): Promise<Record<string, unknown>>;
}
