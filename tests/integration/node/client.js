// A Node.js (OpenSSL 3.5) mTLS client: GET / over TLS 1.3 offering only X25519MLKEM768,
// then print what was negotiated and the HTTP status as one JSON line.
const tls = require('tls');
const fs = require('fs');
const [port, cert, key, ca] = process.argv.slice(2);
const socket = tls.connect({
  host: '127.0.0.1', port: Number(port), servername: 'backend',
  cert: fs.readFileSync(cert), key: fs.readFileSync(key), ca: fs.readFileSync(ca),
  ecdhCurve: 'X25519MLKEM768', minVersion: 'TLSv1.3', checkServerIdentity: () => undefined,
}, () => {
  socket.write('GET /echo/node HTTP/1.1\r\nhost: backend\r\nconnection: close\r\n\r\n');
});
let data = '';
socket.on('data', (d) => { data += d; });
socket.on('end', () => {
  console.log(JSON.stringify({
    status: Number(data.split(' ')[1]), protocol: socket.getProtocol(),
    group: (socket.getEphemeralKeyInfo() || {}).name || null,
    peer: (socket.getPeerCertificate() || {}).subjectaltname || null,
  }));
});
socket.on('error', (e) => { console.log(JSON.stringify({ error: e.message })); process.exit(1); });
