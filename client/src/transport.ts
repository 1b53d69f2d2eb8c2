import http from 'node:http';
import https from 'node:https';

export interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/**
 * POSTs JSON over keep-alive connections (node:http, not fetch: about half the client CPU per
 * request at batch rates, and the client's CPU is what limits one process's throughput). A request
 * that has no complete answer within `timeoutMs` is destroyed and fails like a network error.
 */
export class Transport {
  private readonly agent: http.Agent;
  private readonly mod: typeof http | typeof https;
  private readonly base: URL;
  private readonly auth: string;

  constructor(
    baseUrl: string,
    apiKey: string,
    maxSockets: number,
    private readonly timeoutMs: number,
  ) {
    this.base = new URL(baseUrl);
    if (this.base.protocol !== 'http:' && this.base.protocol !== 'https:')
      throw new TypeError(`baseUrl must be http(s), got ${baseUrl}`);
    this.mod = this.base.protocol === 'https:' ? https : http;
    this.agent = new this.mod.Agent({ keepAlive: true, maxSockets });
    this.auth = `Bearer ${apiKey}`;
  }

  post(path: string, body: string): Promise<Answer> {
    return new Promise((resolve, reject) => {
      const req = this.mod.request(
        {
          protocol: this.base.protocol,
          hostname: this.base.hostname,
          port: this.base.port,
          path,
          method: 'POST',
          agent: this.agent,
          headers: {
            authorization: this.auth,
            'content-type': 'application/json',
            'content-length': Buffer.byteLength(body),
          },
        },
        (res) => {
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (c: string) => (text += c));
          res.on('end', () => {
            clearTimeout(timer);
            resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text });
          });
          res.on('error', fail);
        },
      );
      const timer = setTimeout(
        () => req.destroy(new Error(`no complete answer within ${this.timeoutMs} ms`)),
        this.timeoutMs,
      );
      function fail(err: Error): void {
        clearTimeout(timer);
        reject(err);
      }
      req.on('error', fail);
      req.end(body);
    });
  }

  close(): void {
    this.agent.destroy();
  }
}
