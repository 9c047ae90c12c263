package referral.testbed;

import java.util.concurrent.CountDownLatch;

import java.util.List;

import de.bwaldvogel.mongo.MongoServer;
import de.bwaldvogel.mongo.MongoVersion;
import de.bwaldvogel.mongo.ServerVersion;
import de.bwaldvogel.mongo.backend.memory.MemoryBackend;

/**
 * MongoDB-wire test server for the e2e test bed.
 *
 * <p>Usage: {@code java -jar mongo-server.jar PORT [3.6|4.0|5.0|4.4 [HOST]]}. Binds the
 * in-memory backend of mongo-java-server to HOST:PORT (127.0.0.1 unless given: the
 * test bed's node reaches it on the address of the host's end of its link), prints one line
 * starting with "ready" to stdout, and stays up until killed (SIGTERM/SIGINT
 * shut it down cleanly). Data lives in memory only.
 */
public final class MongoTestServer {

    private MongoTestServer() {
    }

    public static void main(String[] args) throws InterruptedException {
        if (args.length < 1 || args.length > 3) {
            System.err.println("usage: mongo-server PORT [3.6|4.0|5.0|4.4 [HOST]]");
            System.exit(2);
        }
        int port = Integer.parseInt(args[0]);

        MemoryBackend backend = new MemoryBackend();
        if (args.length >= 2) {
            backend.version(parseVersion(args[1]));
        }
        String host = args.length == 3 ? args[2] : "127.0.0.1";
        MongoServer server = new MongoServer(backend);
        server.bind(host, port);

        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            server.shutdownNow();
            stopped.countDown();
        }, "mongo-server-shutdown"));

        System.out.println("ready mongodb://" + host + ":" + port);
        System.out.flush();
        stopped.await();
    }

    /**
     * MongoDB 4.4 as the server advertises it (wire version 9). mongo-java-server's
     * own versions stop at wire version 8, and the Rust driver 3.x refuses to talk to
     * anything below 9. Only the advertised version changes: the commands the tests
     * use (CRUD, createIndexes, listIndexes, aggregate) behave the same.
     */
    private static final MongoVersion MONGO_4_4 = new MongoVersion() {
        @Override
        public List<Integer> getVersionArray() {
            return List.of(4, 4, 0);
        }

        @Override
        public int getWireVersion() {
            return 9;
        }
    };

    private static MongoVersion parseVersion(String v) {
        switch (v) {
            case "4.4":
                return MONGO_4_4;
            case "3.6":
                return ServerVersion.MONGO_3_6;
            case "4.0":
                return ServerVersion.MONGO_4_0;
            case "5.0":
                return ServerVersion.MONGO_5_0;
            default:
                throw new IllegalArgumentException("unsupported server version: " + v);
        }
    }
}
