// A job that writes to PostgreSQL with its fencing token, and a table that rejects stale tokens.
//
//   node examples/fenced-postgres-job.mjs   (KEYLOCK_SERVERS, default 127.0.0.1:7411;
//                                            DATABASE_URL, default postgres://postgres@127.0.0.1:5432/test)
// A lock alone cannot stop a writer that paused (a GC pause, a stalled VM) past the moment its lock was taken
// from it. The fencing token can: every write grant carries a `writeSeq` larger than any before it, the job
// writes it with its data, and the table refuses a write whose token is not larger than the one stored.
import pg from "pg";
import { connect } from "keylock";

const servers = (process.env.KEYLOCK_SERVERS ?? "127.0.0.1:7411").split(",");
const db = new pg.Client({ connectionString: process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test" });
await db.connect();
const table = `keylock_example_reports_${process.pid}`;
await db.query(`
  CREATE TABLE ${table} (id text PRIMARY KEY, body text NOT NULL, fencing_token numeric(20,0) NOT NULL);
  CREATE FUNCTION ${table}_fence() RETURNS trigger LANGUAGE plpgsql AS $$
  BEGIN
    IF NEW.fencing_token <= OLD.fencing_token THEN
      RAISE EXCEPTION 'stale fencing token % (the row was written with %)', NEW.fencing_token, OLD.fencing_token
        USING ERRCODE = 'serialization_failure';
    END IF;
    RETURN NEW;
  END $$;
  CREATE TRIGGER ${table}_fence BEFORE UPDATE ON ${table} FOR EACH ROW EXECUTE FUNCTION ${table}_fence();
  INSERT INTO ${table} VALUES ('daily', 'nothing yet', 0);
`);

/** The job: compute under the lock, write with the lock's token. */
async function writeReport(lock, body) {
  await db.query(`UPDATE ${table} SET body = $2, fencing_token = $3 WHERE id = $1`, ["daily", body, lock.writeSeq.toString()]);
}

try {
  const slowJob = await connect({ servers, name: "slow-job" });
  const nextJob = await connect({ servers, name: "next-job" });

  const stale = await slowJob.acquire("reports/daily", "write");
  console.log(`slow job holds the lock with token ${stale.writeSeq}, then pauses...`);
  stale.release(); // in real life: its lease ran out, or it was fenced, while it was paused

  await nextJob.withLock("reports/daily", "write", async (lock) => {
    await writeReport(lock, "written by the next job");
    console.log(`next job wrote the report with token ${lock.writeSeq}`);
  });

  try {
    await writeReport(stale, "written late by the slow job"); // wakes up and writes with its old token
    console.log("the stale write went through: the table did not fence it");
    process.exitCode = 1;
  } catch (error) {
    console.log(`the table refused the slow job's late write: ${error.message}`);
  }
  const { rows } = await db.query(`SELECT body, fencing_token FROM ${table} WHERE id = 'daily'`);
  console.log(`the report: "${rows[0].body}" (token ${rows[0].fencing_token})`);
  if (rows[0].body !== "written by the next job") process.exitCode = 1;
  await Promise.all([slowJob.close(), nextJob.close()]);
} finally {
  await db.query(`DROP TABLE ${table}; DROP FUNCTION ${table}_fence()`);
  await db.end();
}
