// Sends log lines with winston and winston-loki (protobuf + Snappy, its default when the
// snappy package loads) to a Loki push endpoint, then flushes and exits.
//
//   node send_winston.mjs '{"host": "http://127.0.0.1:4318", "labels": {"app": "web"},
//                           "lines": [["info", "text"], ["error", "text"], ...]}'
//
// `host` is the base URL (winston-loki appends /loki/api/v1/push). Each line is sent
// exactly as given (a printf format of the message alone), at its winston level, which
// winston-loki puts in the stream's `level` label. Prints one JSON line:
// {"sent": n, "format": "protobuf" | "json", "errors": [...]}; exits 1 on any error.
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const winston = require('winston')
const LokiTransport = require('winston-loki')

const spec = JSON.parse(process.argv[2])
const errors = []
const transport = new LokiTransport({
  host: spec.host,
  labels: spec.labels || {},
  json: spec.json === true, // false: protobuf + Snappy
  interval: 0.2, // seconds between batches
  gracefulShutdown: false,
  clearOnError: false,
  timeout: 10000,
  format: winston.format.printf((info) => info.message),
  onConnectionError: (err) => errors.push(String(err && err.message ? err.message : err))
})
const format = transport.batcher.options.json ? 'json' : 'protobuf'

const logger = winston.createLogger({ level: 'silly', transports: [transport] })
let logged = 0
const all = new Promise((resolve) => {
  if (spec.lines.length === 0) resolve()
  transport.on('logged', () => {
    logged += 1
    if (logged === spec.lines.length) resolve()
  })
})
for (const [level, message] of spec.lines) {
  logger.log({ level, message })
}

const deadline = setTimeout(() => {
  errors.push(`timed out: ${logged} of ${spec.lines.length} lines reached the transport`)
  finish()
}, 60000)

function finish () {
  clearTimeout(deadline)
  console.log(JSON.stringify({ sent: logged, format, errors }))
  process.exit(errors.length ? 1 : 0)
}

await all
await transport.flush() // every batch sent before now answered
await transport.close() // and the last one
finish()
