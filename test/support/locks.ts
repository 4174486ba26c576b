/**
 * A short-lived client for integration tests: takes a write lock through any of `servers` (redirected to
 * the leader), lets it go, says farewell, and returns the fencing token it was granted.
 */
import { connect } from "../../src/index.js";

export async function takeWriteLock(servers: string[], key: string, secret?: string): Promise<bigint> {
  const client = await connect({ servers, connectTimeoutMs: 20_000, ...(secret === undefined ? {} : { secret }) });
  try {
    const lock = await client.acquire(key, "write");
    const seq = lock.writeSeq;
    lock.release();
    return seq;
  } finally {
    await client.close();
  }
}
