// BullMQ through the proxy (tests/sessions.rs): a producer enqueues 1,000
// jobs, two workers process them; every job is processed exactly once.
// The queue's keys share the hash tag of its prefix, as BullMQ documents for
// Redis Cluster. usage: node bullmq_jobs.js PORT
const { Queue, Worker, QueueEvents } = require("bullmq");

const port = Number(process.argv[2]);
const connection = { host: "127.0.0.1", port, maxRetriesPerRequest: null };
const prefix = "{bq}";
const N = 1000;

async function main() {
  const deadline = setTimeout(() => {
    console.error("timed out");
    process.exit(2);
  }, 120000);
  const queue = new Queue("jobs", { connection, prefix });
  await queue.obliterate({ force: true }).catch(() => {});
  const events = new QueueEvents("jobs", { connection, prefix });
  await events.waitUntilReady();
  const seen = new Map();
  let completed = 0;
  const done = new Promise((resolve) => {
    events.on("completed", () => {
      completed += 1;
      if (completed === N) resolve();
    });
  });
  const process = async (job) => {
    seen.set(job.data.i, (seen.get(job.data.i) || 0) + 1);
    return job.data.i * 2;
  };
  const workers = [
    new Worker("jobs", process, { connection, prefix, concurrency: 8 }),
    new Worker("jobs", process, { connection, prefix, concurrency: 8 }),
  ];
  for (let start = 0; start < N; start += 100) {
    const batch = [];
    for (let i = start; i < start + 100; i++) {
      batch.push({ name: "j", data: { i } });
    }
    await queue.addBulk(batch);
  }
  await done;
  const counts = await queue.getJobCounts("completed", "failed", "waiting", "active");
  for (const w of workers) {
    await w.close();
  }
  await events.close();
  await queue.close();
  clearTimeout(deadline);
  const doubled = [...seen.values()].filter((n) => n !== 1).length;
  if (seen.size !== N || doubled !== 0 || counts.completed !== N || counts.failed !== 0) {
    throw new Error(`processed ${seen.size} distinct, ${doubled} more than once; counts ${JSON.stringify(counts)}`);
  }
  console.log(`bullmq: ${N} jobs by 2 workers, each processed once; counts ${JSON.stringify(counts)}`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
