// rnnexport's ONNX Runtime for Node.js client: a deployment-side consumer of model.onnx.
//
//   node run.js [MODEL.onnx|-] [THREADS]
//
// Same line protocol as the LibTorch client: prints "ready", then per request on stdin
//   LOAD PATH                creates a session for the model at PATH (the rest of the line), replacing
//                            the one before; one process serves many artifacts in turn
//   RUN DIR                  reads DIR/inputs.txt ("name dtype ndim d0 d1 ..." per line, dtype float32 or
//                            int64) and DIR/<name>.bin (little-endian, C order); writes
//                            DIR/<output name>.bin (float32) and DIR/outputs.txt
//   BENCH DIR WARMUP REPEAT  answers "ok <ms of each timed run>"
// and answers "ok" or "error <message>" on one line.
'use strict';
const fs = require('fs');
const path = require('path');
const readline = require('readline');
const ort = require('onnxruntime-node');

function readInputs(dir) {
  const feeds = {};
  const lines = fs.readFileSync(path.join(dir, 'inputs.txt'), 'utf8').split('\n').filter(Boolean);
  for (const line of lines) {
    const [name, dtype, ndim, ...rest] = line.trim().split(/\s+/);
    const dims = rest.slice(0, Number(ndim)).map(Number);
    const bytes = fs.readFileSync(path.join(dir, `${name}.bin`));
    const Typed = dtype === 'int64' ? BigInt64Array : Float32Array;
    const data = new Typed(bytes.byteLength / Typed.BYTES_PER_ELEMENT);
    Buffer.from(data.buffer).set(bytes);  // copy: typed arrays need aligned storage
    feeds[name] = new ort.Tensor(dtype, data, dims);
  }
  return feeds;
}

function writeOutputs(dir, session, results) {
  const index = [];
  for (const name of session.outputNames) {
    const tensor = results[name];
    index.push(`${name} ${tensor.dims.length} ${tensor.dims.join(' ')}`.trim());
    fs.writeFileSync(path.join(dir, `${name}.bin`), Buffer.from(tensor.data.buffer, tensor.data.byteOffset, tensor.data.byteLength));
  }
  fs.writeFileSync(path.join(dir, 'outputs.txt'), index.join('\n') + '\n');
}

const oneLine = (error) => String(error && error.message ? error.message : error).replace(/\s+/g, ' ').slice(0, 500);

async function main() {
  const [model, threads] = process.argv.slice(2);
  const options = { executionProviders: ['cpu'] };
  if (Number(threads) > 0) {
    options.intraOpNumThreads = Number(threads);
    options.interOpNumThreads = 1;
  }
  let session = null;
  const load = async (file) => {
    if (session !== null) {
      await session.release();
      session = null;
    }
    try {
      session = await ort.InferenceSession.create(file, options);
      return true;
    } catch (error) {
      console.log(`error cannot load ${file}: ${oneLine(error)}`);
      return false;
    }
  };
  if (model && model !== '-' && !(await load(model))) process.exit(1);
  console.log('ready');
  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    if (line.startsWith('LOAD ')) {
      if (await load(line.slice(5))) console.log('ok');
      continue;
    }
    const [command, dir, warmup, repeat] = line.trim().split(/\s+/);
    try {
      if (session === null) throw new Error('no model loaded (LOAD PATH first)');
      const feeds = readInputs(dir);
      if (command === 'RUN') {
        writeOutputs(dir, session, await session.run(feeds));
        console.log('ok');
      } else if (command === 'BENCH') {
        for (let i = 0; i < Number(warmup); i++) await session.run(feeds);
        const ms = [];
        for (let i = 0; i < Number(repeat); i++) {
          const start = process.hrtime.bigint();
          await session.run(feeds);
          ms.push(Number(process.hrtime.bigint() - start) / 1e6);
        }
        console.log(`ok ${ms.join(' ')}`);
      } else {
        console.log(`error unknown command ${command}`);
      }
    } catch (error) {
      console.log(`error ${oneLine(error)}`);
    }
  }
}

main().catch((error) => { console.log(`error ${oneLine(error)}`); process.exit(1); });
