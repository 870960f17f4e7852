// ShareDB 7 in memory with the ot-text-unicode type: the reference for collab's side-by-side
// benchmark. Usage: node server.js PORT DOC [DOC ...]; prints "ready PORT" once listening.
// Documents live in the collection "bench" and start empty. Listens on 127.0.0.1 only.
'use strict';

const http = require('http');
const ShareDB = require('sharedb');
const WebSocketJSONStream = require('@teamwork/websocket-json-stream');
const {WebSocketServer} = require('ws');
const textUnicode = require('ot-text-unicode');

ShareDB.types.register(textUnicode.type);

const port = Number(process.argv[2]);
const docs = process.argv.slice(3);
const backend = new ShareDB();

function createDocs(callback) {
  const connection = backend.connect();
  let left = docs.length;
  if (left === 0) return callback();
  for (const id of docs) {
    connection.get('bench', id).create('', textUnicode.type.uri, (err) => {
      if (err) throw err;
      if (--left === 0) callback();
    });
  }
}

createDocs(() => {
  const server = http.createServer((req, res) => {
    res.writeHead(200, {'content-type': 'text/plain'});
    res.end('ok\n');
  });
  // perMessageDeflate off, as collab's server runs it (ws_per_message_deflate=False).
  const wss = new WebSocketServer({server, perMessageDeflate: false});
  wss.on('connection', (ws) => backend.listen(new WebSocketJSONStream(ws)));
  server.listen(port, '127.0.0.1', () => console.log(`ready ${port}`));
});

process.on('SIGTERM', () => process.exit(0));
