// Creates the ACL bindings listed in a file (one per line, tab-separated: principal,
// resource type, resource name, pattern type, operation; all ALLOW from any host) with the
// Kafka Admin client. aiokafka 0.14 has no CreateAcls (and Kafka 4 dropped the protocol
// versions its structs speak), so the secured-broker test runs this with `java -cp lib/*`.
// Usage: java -cp 'deploy/local/kafka/lib/*' CreateAcls.java client.properties bindings.tsv
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.common.acl.AccessControlEntry;
import org.apache.kafka.common.acl.AclBinding;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.acl.AclPermissionType;
import org.apache.kafka.common.resource.PatternType;
import org.apache.kafka.common.resource.ResourcePattern;
import org.apache.kafka.common.resource.ResourceType;

public class CreateAcls {
    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        try (InputStream in = Files.newInputStream(Path.of(args[0]))) {
            props.load(in);
        }
        List<AclBinding> bindings = new ArrayList<>();
        for (String line : Files.readAllLines(Path.of(args[1]))) {
            if (line.isBlank()) {
                continue;
            }
            String[] f = line.split("\t");
            ResourceType type = ResourceType.fromString(f[1]);
            PatternType pattern = PatternType.fromString(f[3]);
            AclOperation operation = AclOperation.fromString(f[4]);
            if (type == ResourceType.UNKNOWN || pattern == PatternType.UNKNOWN
                    || operation == AclOperation.UNKNOWN) {
                throw new IllegalArgumentException("unknown ACL field in: " + line);
            }
            bindings.add(new AclBinding(
                    new ResourcePattern(type, f[2], pattern),
                    new AccessControlEntry(f[0], "*", operation, AclPermissionType.ALLOW)));
        }
        try (Admin admin = Admin.create(props)) {
            admin.createAcls(bindings).all().get();
        }
        System.out.println("created " + bindings.size() + " ACL bindings");
    }
}
