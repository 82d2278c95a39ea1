import { readdirSync, readlinkSync } from 'node:fs';

/** This process's open descriptors, as what they point to. */
export function openFds(): string[] {
  return readdirSync('/proc/self/fd').flatMap((fd) => {
    try {
      return [readlinkSync(`/proc/self/fd/${fd}`)];
    } catch {
      return []; // the directory's own, closed while listed
    }
  });
}
