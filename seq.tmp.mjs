import http from 'node:http'

const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
const url = process.argv[2]
const lat = []
const t0 = performance.now()
const one = () =>
  new Promise((res) => {
    const s = performance.now()
    http.get(url, { agent }, (r) => {
      r.resume()
      r.on('end', () => res(performance.now() - s))
    })
  })
for (let i = 0; i < 300; i++) await one()
const start = performance.now()
while (performance.now() - start < 3000) {
  const s = performance.now()
  const d = await one()
  lat.push([s - start, d])
}
const sorted = lat.map((x) => x[1]).sort((a, b) => a - b)
console.log(
  'n',
  lat.length,
  'p50',
  sorted[Math.floor(lat.length * 0.5)].toFixed(3),
  'p90',
  sorted[Math.floor(lat.length * 0.9)].toFixed(3),
  'p99',
  sorted[Math.floor(lat.length * 0.99)].toFixed(3),
)
const slow = lat.filter((x) => x[1] > 1.5)
console.log(
  'slow count',
  slow.length,
  slow
    .slice(0, 40)
    .map((x) => x[0].toFixed(0) + ':' + x[1].toFixed(1))
    .join(' '),
)
