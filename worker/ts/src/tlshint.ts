// Names the likely cause of a connection failure that TLS settings explain, or "".
// gRPC reports these as bare transport errors; the hint names the setting to look at
// (the same hints as the Go and Python workers).

export function tlsHint(details: string, tls: boolean, clientCert: boolean): string {
  const text = details.toLowerCase();
  const has = (...needles: string[]): boolean => needles.some((n) => text.includes(n));
  if (has("certificate_verify_failed", "unable to get local issuer", "self-signed certificate", "unknown authority", "unable to verify")) {
    return "the coordinator's certificate is not signed by a CA this worker trusts: pass the CA that signed it with --tls-ca";
  }
  if (has("wrong version", "packet length too long", "first record does not look like a tls handshake")) {
    return "the coordinator does not speak TLS: leave out --tls/--tls-ca, or check the address";
  }
  if (has("hostname verification", "does not match certificate", "altnames", "certificate is valid for")) {
    return "the coordinator's certificate does not name this address: connect by a name it lists, or set --tls-server-name";
  }
  if (has("socket closed", "connection reset", "econnreset", "eof", "read server preface")) {
    if (!tls) return "if the coordinator serves TLS, connect with --tls (or --tls-ca CA.pem): it closes plain-text connections";
    if (!clientCert) return "if the coordinator requires client certificates (mTLS), pass --tls-cert and --tls-key";
    return "if the coordinator requires client certificates, check that --tls-cert is signed by the CA it trusts (--tls-client-ca)";
  }
  return "";
}
