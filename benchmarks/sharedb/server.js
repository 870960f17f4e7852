// ShareDB 7 with the ot-text-unicode type: the reference for collab's side-by-side benchmark.
// Usage: node server.js PORT [--postgres URL] [--content TEXT] DOC [DOC ...]; prints
// "ready PORT" once listening. Listens on 127.0.0.1 only.
//
// Without --postgres the database and pub/sub are ShareDB's in-memory ones (no durability).
// With it, sharedb-postgres (pinned in package.json) stores every op and snapshot in that
// PostgreSQL database; its tables are created here (the package's structure.sql). Documents
// live in the collection "bench" and start with --content (default empty): sharedb-postgres
// 5.0.1 stores an empty text snapshot as null, which ShareDB then refuses on the first op.
'use strict';

const fs = require('fs');
const http = require('http');
const path = require('path');
const ShareDB = require('sharedb');
const WebSocketJSONStream = require('@teamwork/websocket-json-stream');
const {WebSocketServer} = require('ws');
const textUnicode = require('ot-text-unicode');

ShareDB.types.register(textUnicode.type);

const args = process.argv.slice(2);
const port = Number(args.shift());
let postgres = null;
let content = '';
const docs = [];
while (args.length) {
  const arg = args.shift();
  if (arg === '--postgres') postgres = args.shift();
  else if (arg === '--content') content = args.shift();
  else docs.push(arg);
}

async function database() {
  if (!postgres) return undefined;
  const pg = require('pg');
  const client = new pg.Client({connectionString: postgres});
  await client.connect();
  const structure = path.join(path.dirname(require.resolve('sharedb-postgres')), 'structure.sql');
  await client.query(fs.readFileSync(structure, 'utf8'));
  await client.end();
  // One pool of 10 connections, as collab's engine (pool_size=10).
  return require('sharedb-postgres')({connectionString: postgres, max: 10});
}

function createDocs(backend) {
  const connection = backend.connect();
  return Promise.all(docs.map((id) => new Promise((resolve, reject) => {
    connection.get('bench', id).create(content, textUnicode.type.uri, (err) => {
      if (err) reject(err);
      else resolve();
    });
  })));
}

async function main() {
  const backend = new ShareDB({db: await database()});
  await createDocs(backend);
  const server = http.createServer((req, res) => {
    res.writeHead(200, {'content-type': 'text/plain'});
    res.end('ok\n');
  });
  // perMessageDeflate off, as collab's server runs it (ws_per_message_deflate=False).
  const wss = new WebSocketServer({server, perMessageDeflate: false});
  wss.on('connection', (ws) => backend.listen(new WebSocketJSONStream(ws)));
  server.listen(port, '127.0.0.1', () => console.log(`ready ${port}`));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});

process.on('SIGTERM', () => process.exit(0));
