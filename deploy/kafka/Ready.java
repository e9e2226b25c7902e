// Waits until a Kafka broker answers on the Kafka protocol (not merely an open port): a metadata
// request through the broker's own admin client must list at least one broker. Run by
// scripts/common.sh as a single-file program with the broker's jars on the class path:
//   java -cp '<libs>/*' Ready.java <bootstrap> <seconds>
// Exit 0 when ready, 1 when the deadline passed.
import java.util.Properties;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;

public class Ready {
    public static void main(String[] args) throws Exception {
        String bootstrap = args[0];
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(Long.parseLong(args[1]));
        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "2000");
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "2000");
        props.put(AdminClientConfig.RECONNECT_BACKOFF_MAX_MS_CONFIG, "200");
        try (Admin admin = Admin.create(props)) {
            while (System.nanoTime() < deadline) {
                try {
                    int brokers = admin.describeCluster().nodes().get(2, TimeUnit.SECONDS).size();
                    if (brokers > 0) {
                        System.exit(0);
                    }
                } catch (Exception notYet) {
                    // Not listening yet, or still electing its controller: ask again.
                }
                Thread.sleep(100);
            }
        }
        System.err.println("no Kafka broker answered at " + bootstrap);
        System.exit(1);
    }
}
