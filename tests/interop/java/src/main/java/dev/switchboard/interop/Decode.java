package dev.switchboard.interop;

import java.io.ByteArrayInputStream;
import java.io.File;
import java.io.IOException;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeMap;
import java.util.regex.Pattern;

import org.apache.avro.Schema;
import org.apache.avro.SchemaNormalization;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.message.BinaryMessageDecoder;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

/**
 * Reads Switchboard's topics as a consumer that knows nothing but the {@code .avsc} files: every
 * record value must be Avro single-object encoding that Apache Avro's own
 * {@link BinaryMessageDecoder} decodes, with the writer schema found by its fingerprint.
 *
 * <pre>
 * java -cp target/interop-decoder.jar:target/lib/* dev.switchboard.interop.Decode \
 *     BOOTSTRAP SCHEMAS_DIR TOPIC=RECORD_NAME...
 * </pre>
 *
 * <p>{@code RECORD_NAME} is the record's name ({@code RawWebhook}) or full name
 * ({@code io.switchboard.RawWebhook}). Each topic is read from the beginning to its end offsets at
 * start-up, by assignment (no consumer group). The decoder of a record name reads with the current
 * schema ({@code name.avsc}) and knows every version in the folder ({@code name.vN.avsc}), each
 * added with {@code addSchema}. Prints one line per schema file with its fingerprint, one
 * {@code RESULT topic=... decoded=N failed=M} line per topic, and exits 0 only when every record
 * of every topic decoded and no topic was empty; 1 otherwise, 2 on a usage error.
 */
public final class Decode {
    private static final Pattern VERSIONED = Pattern.compile(".*\\.v[0-9]+\\.avsc");
    private static final Duration DEADLINE = Duration.ofSeconds(120);
    private static final int ERRORS_SHOWN = 5;

    private Decode() {}

    public static void main(String[] args) throws Exception {
        if (args.length < 3) {
            System.err.println("usage: Decode BOOTSTRAP SCHEMAS_DIR TOPIC=RECORD_NAME...");
            System.exit(2);
        }
        Map<String, BinaryMessageDecoder<GenericRecord>> decoders = decoders(new File(args[1]));
        Map<String, String> topics = new TreeMap<>();
        for (String arg : Arrays.asList(args).subList(2, args.length)) {
            int eq = arg.lastIndexOf('=');
            if (eq <= 0) {
                System.err.println("not TOPIC=RECORD_NAME: " + arg);
                System.exit(2);
            }
            String name = arg.substring(eq + 1);
            String full = decoders.containsKey(name) ? name : "io.switchboard." + name;
            if (!decoders.containsKey(full)) {
                System.err.println("no schema named " + name + " in " + args[1] + "; known: " + decoders.keySet());
                System.exit(2);
            }
            topics.put(arg.substring(0, eq), full);
        }

        boolean ok = true;
        try (KafkaConsumer<byte[], byte[]> consumer = consumer(args[0])) {
            for (Map.Entry<String, String> topic : topics.entrySet()) {
                ok &= readTopic(consumer, topic.getKey(), topic.getValue(), decoders.get(topic.getValue()));
            }
        }
        System.exit(ok ? 0 : 1);
    }

    /** One decoder per record full name, reading with the current schema, knowing every version. */
    private static Map<String, BinaryMessageDecoder<GenericRecord>> decoders(File dir) throws Exception {
        File[] files = dir.listFiles((d, name) -> name.endsWith(".avsc"));
        if (files == null || files.length == 0) {
            throw new IOException("no .avsc files in " + dir);
        }
        Arrays.sort(files);
        Map<String, Schema> current = new HashMap<>();
        Map<String, List<Schema>> older = new HashMap<>();
        for (File file : files) {
            // A parser per file: the versions of one record share its names.
            Schema schema = new Schema.Parser().parse(file);
            // CRC-64-AVRO of the Parsing Canonical Form, as the 8 little-endian bytes on the wire.
            byte[] wire = SchemaNormalization.parsingFingerprint("CRC-64-AVRO", schema);
            System.out.printf("schema %s %s fingerprint %s (as a long: %016x)%n", file.getName(),
                schema.getFullName(), hex(wire, 0, wire.length), SchemaNormalization.parsingFingerprint64(schema));
            if (VERSIONED.matcher(file.getName()).matches()) {
                older.computeIfAbsent(schema.getFullName(), k -> new ArrayList<>()).add(schema);
            } else if (current.put(schema.getFullName(), schema) != null) {
                throw new IOException("two current schemas named " + schema.getFullName());
            }
        }
        Map<String, BinaryMessageDecoder<GenericRecord>> decoders = new HashMap<>();
        for (Map.Entry<String, Schema> entry : current.entrySet()) {
            BinaryMessageDecoder<GenericRecord> decoder =
                new BinaryMessageDecoder<>(GenericData.get(), entry.getValue());
            for (Schema version : older.getOrDefault(entry.getKey(), List.of())) {
                decoder.addSchema(version);
            }
            decoders.put(entry.getKey(), decoder);
        }
        for (String name : older.keySet()) {
            if (!current.containsKey(name)) {
                throw new IOException("older versions of " + name + " but no current schema");
            }
        }
        return decoders;
    }

    private static KafkaConsumer<byte[], byte[]> consumer(String bootstrap) {
        Properties props = new Properties();
        props.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        props.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        props.put(ConsumerConfig.CLIENT_ID_CONFIG, "switchboard-interop-java");
        // A topic the pipeline never wrote is a failure, not something to create.
        props.put(ConsumerConfig.ALLOW_AUTO_CREATE_TOPICS_CONFIG, "false");
        // Records up to the size ingress accepts (a 1 MiB body inside its raw record).
        props.put(ConsumerConfig.MAX_PARTITION_FETCH_BYTES_CONFIG, Integer.toString(8 * 1024 * 1024));
        return new KafkaConsumer<>(props, new ByteArrayDeserializer(), new ByteArrayDeserializer());
    }

    /** Reads `topic` from its beginning to its current end; returns whether all went well. */
    private static boolean readTopic(KafkaConsumer<byte[], byte[]> consumer, String topic, String schema,
                                     BinaryMessageDecoder<GenericRecord> decoder) {
        List<PartitionInfo> infos = consumer.partitionsFor(topic, Duration.ofSeconds(30));
        if (infos == null || infos.isEmpty()) {
            System.out.printf("RESULT topic=%s decoded=0 failed=0%n", topic);
            System.err.println(topic + ": no such topic");
            return false;
        }
        List<TopicPartition> partitions = new ArrayList<>();
        for (PartitionInfo info : infos) {
            partitions.add(new TopicPartition(topic, info.partition()));
        }
        consumer.assign(partitions);
        consumer.seekToBeginning(partitions);
        Map<TopicPartition, Long> end = consumer.endOffsets(partitions);
        long decoded = 0;
        long failed = 0;
        Set<String> fingerprints = new HashSet<>();
        long deadline = System.nanoTime() + DEADLINE.toNanos();
        while (!atEnd(consumer, partitions, end)) {
            if (System.nanoTime() > deadline) {
                System.err.printf("%s: not read to its end offsets %s within %s%n", topic, end, DEADLINE);
                failed++;
                break;
            }
            for (ConsumerRecord<byte[], byte[]> record : consumer.poll(Duration.ofMillis(500))) {
                byte[] value = record.value();
                if (value != null && value.length >= 10) {
                    fingerprints.add(hex(value, 2, 10));
                }
                String error = decodeOne(decoder, schema, value);
                if (error == null) {
                    decoded++;
                } else {
                    if (failed < ERRORS_SHOWN) {
                        System.err.printf("%s-%d@%d: %s%n", topic, record.partition(), record.offset(), error);
                    }
                    failed++;
                }
            }
        }
        consumer.unsubscribe();
        System.out.printf("topic %s (%s): fingerprints on the wire %s%n", topic, schema, fingerprints);
        System.out.printf("RESULT topic=%s decoded=%d failed=%d%n", topic, decoded, failed);
        if (decoded + failed == 0) {
            System.err.println(topic + ": no records");
        }
        return failed == 0 && decoded > 0;
    }

    private static boolean atEnd(KafkaConsumer<byte[], byte[]> consumer, List<TopicPartition> partitions,
                                 Map<TopicPartition, Long> end) {
        for (TopicPartition partition : partitions) {
            if (consumer.position(partition) < end.get(partition)) {
                return false;
            }
        }
        return true;
    }

    /** Decodes one value; returns null when it decoded whole as `schema`, else what went wrong. */
    private static String decodeOne(BinaryMessageDecoder<GenericRecord> decoder, String schema, byte[] value) {
        if (value == null) {
            return "a record without a value";
        }
        try {
            ByteArrayInputStream in = new ByteArrayInputStream(value);
            GenericRecord record = decoder.decode(in, null);
            if (!record.getSchema().getFullName().equals(schema)) {
                return "decoded as " + record.getSchema().getFullName() + ", not " + schema;
            }
            if (in.available() != 0) {
                return in.available() + " bytes after the datum";
            }
            return null;
        } catch (Exception e) {
            // MissingSchemaException (unknown fingerprint), BadHeaderException, AvroRuntimeException...
            return e.toString();
        }
    }

    private static String hex(byte[] bytes, int from, int to) {
        StringBuilder hex = new StringBuilder();
        for (int i = from; i < to; i++) {
            hex.append(String.format("%02x", bytes[i] & 0xff));
        }
        return hex.toString();
    }
}
