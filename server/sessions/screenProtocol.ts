/** Messages between the main thread and the screen worker. */
export type ScreenRequest =
  | { type: 'open'; id: string; cols: number; rows: number; offset: number; base?: string }
  | { type: 'data'; id: string; data: Uint8Array }
  | { type: 'resize'; id: string; cols: number; rows: number }
  | { type: 'snapshot'; id: string; requestId: number }
  | { type: 'text'; id: string; requestId: number }
  | { type: 'close'; id: string };

export type ScreenReply =
  | { type: 'snapshot'; requestId: number; offset?: number; cols?: number; rows?: number; data?: string; error?: string }
  | { type: 'text'; requestId: number; lines?: string[]; error?: string }
  | { type: 'progress'; id: string; consumed: number }
  | { type: 'error'; id?: string; message: string };
