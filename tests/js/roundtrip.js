// kafkajs against a broker: create a topic, produce keyed records with headers (acks=-1, and a
// gzip batch), consume them all in a consumer group, and read back the group's committed
// offsets. Prints one JSON line; exits non-zero on any failure.
const { Kafka, logLevel, CompressionTypes } = require('kafkajs');

const [bootstrap, topic, group] = process.argv.slice(2);
const RECORDS = 300;

(async () => {
  const kafka = new Kafka({ clientId: 'gregor-e2e', brokers: [bootstrap], logLevel: logLevel.ERROR });
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic, numPartitions: 3 }], waitForLeaders: true });
  const producer = kafka.producer();
  await producer.connect();
  const messages = Array.from({ length: RECORDS }, (_, i) => ({
    key: 'k' + (i % 7),
    value: 'v' + i,
    headers: { n: String(i) },
  }));
  await producer.send({ topic, messages, acks: -1 });
  await producer.send({ topic, compression: CompressionTypes.GZIP, messages: [{ key: 'g', value: 'gz' }] });
  const consumer = kafka.consumer({ groupId: group });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const seen = [];
  await new Promise((resolve) => {
    consumer.run({
      eachMessage: async ({ partition, message }) => {
        seen.push({ p: partition, o: Number(message.offset), k: message.key.toString(), v: message.value.toString(),
                    h: message.headers.n ? message.headers.n.toString() : null });
        if (seen.length === RECORDS + 1) resolve();
      },
    });
  });
  await consumer.disconnect();
  await producer.disconnect();
  const committed = await admin.fetchOffsets({ groupId: group, topics: [topic] });
  await admin.disconnect();
  console.log(JSON.stringify({ seen, committed: committed[0].partitions }));
})().catch((e) => {
  console.error('kafkajs failed:', e);
  process.exit(1);
});
