// A Node.js (OpenSSL 3.5) HTTPS server requiring a client certificate and X25519MLKEM768; it
// answers each request with what it saw of the TLS connection, as JSON.
const https = require('https');
const fs = require('fs');
const [cert, key, ca] = process.argv.slice(2);
const server = https.createServer({
  cert: fs.readFileSync(cert), key: fs.readFileSync(key), ca: fs.readFileSync(ca),
  requestCert: true, rejectUnauthorized: true, ecdhCurve: 'X25519MLKEM768', minVersion: 'TLSv1.3',
}, (req, res) => {
  const s = req.socket;
  const body = JSON.stringify({
    protocol: s.getProtocol(), group: (s.getEphemeralKeyInfo() || {}).name || null,
    peer: s.getPeerCertificate().subjectaltname || null, authorized: s.authorized,
  });
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
});
server.listen(0, '127.0.0.1', () => { console.log(`listening ${server.address().port}`); });
