// ONNX Runtime's CPU execution provider on one model and one input, for bench/cpu.py.
//
//   node bench/ort_bench.mjs --ort-dir DIR --model M.onnx --input X.npy [--threads 2]
//        [--iters 5] [--warmup 2] [--output Y.npy]
//
// DIR holds node_modules/onnxruntime-node (cpu.py installs it there). The input is a float32
// .npy bound to the model's first input. Warm-up runs, then timed runs of session.run on the
// same input; prints one JSON object on stdout: ORT's version, min_ms, median_ms, times_ms,
// max_rss_kib (the process's peak resident set, model loading included) and the first
// output's dims. With --output, that output is written there as float32 .npy, so the caller
// can compare it with the other frameworks' answers.
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

function parseArgs(argv) {
  const opts = { threads: 2, iters: 5, warmup: 2 };
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, '').replace(/-(.)/g, (_, c) => c.toUpperCase());
    if (!(key in { ortDir: 1, model: 1, input: 1, output: 1, threads: 1, iters: 1, warmup: 1 }) ||
        i + 1 >= argv.length) {
      throw new Error(`bad argument '${argv[i]}'`);
    }
    opts[key] = ['threads', 'iters', 'warmup'].includes(key) ? Number(argv[i + 1]) : argv[i + 1];
  }
  for (const key of ['ortDir', 'model', 'input']) {
    if (!opts[key]) {
      throw new Error(`--${key.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase())} is required`);
    }
  }
  if (!(opts.threads >= 1 && opts.iters >= 1 && opts.warmup >= 0)) {
    throw new Error('--threads and --iters must be >= 1, --warmup >= 0');
  }
  return opts;
}

// Only what numpy writes for a C-ordered float32 array: versions 1 to 3 of the format.
function readNpy(file) {
  const buf = readFileSync(file);
  if (buf.toString('latin1', 0, 6) !== '\x93NUMPY') throw new Error(`${file}: not a .npy file`);
  const major = buf[6];
  const headerLen = major === 1 ? buf.readUInt16LE(8) : buf.readUInt32LE(8);
  const start = (major === 1 ? 10 : 12) + headerLen;
  const header = buf.toString('latin1', major === 1 ? 10 : 12, start);
  if (!/'descr':\s*'<f4'/.test(header) || !/'fortran_order':\s*False/.test(header)) {
    throw new Error(`${file}: expected a C-ordered little-endian float32 array, header ${header}`);
  }
  const dims = header.match(/'shape':\s*\(([^)]*)\)/)[1].split(',').map((s) => s.trim())
    .filter((s) => s).map(Number);
  const count = dims.reduce((a, b) => a * b, 1);
  if (buf.length - start !== 4 * count) throw new Error(`${file}: size does not match its shape`);
  // Copied so the data is 4-byte aligned whatever the header length.
  const data = new Float32Array(count);
  Buffer.from(data.buffer).set(buf.subarray(start));
  return { dims, data };
}

function writeNpy(file, dims, data) {
  const shape = dims.join(', ') + (dims.length === 1 ? ',' : '');
  let header = `{'descr': '<f4', 'fortran_order': False, 'shape': (${shape}), }`;
  header += ' '.repeat(63 - ((10 + header.length) % 64)) + '\n';
  const head = Buffer.alloc(10);
  head.write('\x93NUMPY', 0, 'latin1');
  head[6] = 1;
  head[7] = 0;
  head.writeUInt16LE(header.length, 8);
  writeFileSync(file, Buffer.concat([head, Buffer.from(header, 'latin1'),
    Buffer.from(data.buffer, data.byteOffset, data.byteLength)]));
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const require = createRequire(path.join(path.resolve(opts.ortDir), 'package.json'));
  const ort = require('onnxruntime-node');
  const session = await ort.InferenceSession.create(opts.model, {
    executionProviders: ['cpu'],
    graphOptimizationLevel: 'all',
    intraOpNumThreads: opts.threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
  });
  const x = readNpy(opts.input);
  const feeds = { [session.inputNames[0]]: new ort.Tensor('float32', x.data, x.dims) };
  const outName = session.outputNames[0];
  for (let i = 0; i < opts.warmup; i++) await session.run(feeds);
  const times = [];
  let out;
  for (let i = 0; i < opts.iters; i++) {
    const t0 = process.hrtime.bigint();
    const result = await session.run(feeds);
    times.push(Number(process.hrtime.bigint() - t0) / 1e6);
    out = result[outName];
  }
  if (out.type !== 'float32') throw new Error(`output ${outName} is ${out.type}, not float32`);
  if (opts.output) writeNpy(opts.output, out.dims, out.data);
  const sorted = [...times].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  console.log(JSON.stringify({
    ort_version: ort.env.versions.node ?? ort.env.versions.common,
    threads: opts.threads,
    min_ms: sorted[0],
    median_ms: sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2,
    times_ms: times,
    max_rss_kib: process.resourceUsage().maxRSS,
    output_dims: out.dims,
  }));
  await session.release();
}

main().catch((err) => {
  console.error(`ort_bench: ${err.message}`);
  process.exit(1);
});
