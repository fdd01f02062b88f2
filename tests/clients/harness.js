// What the node client scripts share: the port argument, an assertion, and
// running `main` with a time bound (a script never hangs the suite).

function assert(cond, what) {
  if (!cond) {
    throw new Error("assertion failed: " + what);
  }
}

function run(main, seconds = 60) {
  setTimeout(() => {
    console.error(`timed out after ${seconds} s`);
    process.exit(3);
  }, seconds * 1000).unref();
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
}

module.exports = { assert, run, port: Number(process.argv[2]) };
