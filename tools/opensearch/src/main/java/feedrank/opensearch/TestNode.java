package feedrank.opensearch;

import java.io.IOException;
import java.nio.file.FileVisitResult;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.SimpleFileVisitor;
import java.nio.file.attribute.BasicFileAttributes;
import java.util.ArrayList;
import java.util.Collection;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import org.opensearch.cluster.service.ClusterService;
import org.opensearch.common.settings.Settings;
import org.opensearch.core.common.transport.TransportAddress;
import org.opensearch.env.Environment;
import org.opensearch.http.HttpServerTransport;
import org.opensearch.node.InternalSettingsPreparer;
import org.opensearch.node.Node;
import org.opensearch.plugins.Plugin;

/**
 * A single-node OpenSearch started in this JVM, for feedrank's tests.
 *
 * <p>Usage: {@code java -cp 'classes:lib/*:knn/*' feedrank.opensearch.TestNode [options]}:
 * <ul>
 *   <li>{@code --port N}: the HTTP port; 0 (the default) lets the kernel pick a free one, so two
 *       nodes never race for a port;
 *   <li>{@code --home DIR}: path.home (data and logs below it); default a fresh temporary
 *       directory, deleted at exit;
 *   <li>{@code --pid-file FILE}: this JVM's pid is written there before the node starts;
 *   <li>{@code --exit-with PID}: the node stops when that process ends (a test session that
 *       dies does not leave its node behind);
 *   <li>{@code --no-knn}: do not load the k-NN plugin even when its jars are on the classpath.
 * </ul>
 * When the node is ready (cluster health green or yellow) the last line printed is its URL,
 * {@code http://127.0.0.1:PORT}; the node runs until the process is killed (SIGTERM closes it).
 */
public final class TestNode {
    static final String NAME = "feedrank-test";
    static final String KNN = "org.opensearch.knn.plugin.KNNPlugin";

    /** Node's protected constructor takes plugin classes from the classpath (as MockNode does). */
    static final class ClasspathNode extends Node {
        ClasspathNode(Environment env, Collection<Class<? extends Plugin>> plugins) {
            super(env, plugins, true);
        }

        @Override
        protected void configureNodeAndClusterIdStateListener(ClusterService clusterService) {
            // The real one sets log4j's node-id converter once per JVM: not needed here.
        }
    }

    public static void main(String[] args) throws Exception {
        Map<String, String> opts = options(args);
        int port = Integer.parseInt(opts.getOrDefault("--port", "0"));
        boolean ownHome = !opts.containsKey("--home");
        Path home = ownHome ? Files.createTempDirectory("feedrank-opensearch-") : Path.of(opts.get("--home"));
        if (opts.containsKey("--pid-file")) {
            Files.writeString(Path.of(opts.get("--pid-file")), ProcessHandle.current().pid() + "\n");
        }
        Settings settings = Settings.builder()
            .put("node.name", NAME)
            .put("cluster.name", NAME)
            .put("discovery.type", "single-node")
            .put("network.host", "127.0.0.1")
            .put("http.port", Integer.toString(port))
            .put("transport.port", "0")
            .put("path.home", home.toString())
            .put("path.data", home.resolve("data").toString())
            .put("path.logs", home.resolve("logs").toString())
            // A test machine's disk may be fuller than the watermarks: never block writes on it.
            .put("cluster.routing.allocation.disk.threshold_enabled", false)
            // Each request compiles its own inline scripts in tests: no compilation rate limit.
            .put("script.disable_max_compilations_rate", true)
            .build();
        Environment env = InternalSettingsPreparer.prepareEnvironment(settings, Map.of(), null, () -> NAME);
        Node node = new ClasspathNode(env, plugins(!opts.containsKey("--no-knn")));
        CountDownLatch closed = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                node.close();
                node.awaitClose(20, TimeUnit.SECONDS);
            } catch (IOException | InterruptedException e) {
                System.err.println("closing the node failed: " + e);
            } finally {
                if (ownHome) {
                    deleteTree(home);
                }
                closed.countDown();
            }
        }, "feedrank-opensearch-shutdown"));
        if (opts.containsKey("--exit-with")) {
            long parent = Long.parseLong(opts.get("--exit-with"));
            ProcessHandle.of(parent).ifPresentOrElse(
                p -> p.onExit().thenRun(() -> System.exit(0)),
                () -> System.exit(0));
        }
        node.start();
        node.client().admin().cluster().prepareHealth().setWaitForYellowStatus().get();
        TransportAddress bound = node.injector().getInstance(HttpServerTransport.class)
            .boundAddress().publishAddress();
        System.out.println("http://127.0.0.1:" + bound.getPort());
        System.out.flush();
        closed.await();
    }

    /** The plugins a feedrank store needs; k-NN only when its jars are on the classpath. */
    static Collection<Class<? extends Plugin>> plugins(boolean knn) {
        List<Class<? extends Plugin>> plugins = new ArrayList<>();
        for (String name : List.of(
            "org.opensearch.transport.Netty4Plugin",
            "org.opensearch.painless.PainlessPlugin",
            "org.opensearch.analysis.common.CommonAnalysisPlugin",
            "org.opensearch.index.mapper.MapperExtrasPlugin",
            "org.opensearch.index.reindex.ReindexPlugin")) {
            plugins.add(load(name));
        }
        try {
            if (knn) {
                plugins.add(Class.forName(KNN).asSubclass(Plugin.class));
            }
        } catch (ClassNotFoundException e) {
            // k-NN is optional: without it the store ranks similar items by exact cosine.
        }
        return plugins;
    }

    /** {@code --flag value} pairs; {@code --no-knn} takes no value. */
    static Map<String, String> options(String[] args) {
        Map<String, String> opts = new java.util.HashMap<>();
        for (int i = 0; i < args.length; i++) {
            String a = args[i];
            if (a.equals("--no-knn")) {
                opts.put(a, "");
            } else if (List.of("--port", "--home", "--pid-file", "--exit-with").contains(a) && i + 1 < args.length) {
                opts.put(a, args[++i]);
            } else {
                throw new IllegalArgumentException("options must be among --port N, --home DIR, --pid-file FILE, "
                    + "--exit-with PID, --no-knn; got " + a);
            }
        }
        return opts;
    }

    static Class<? extends Plugin> load(String name) {
        try {
            return Class.forName(name).asSubclass(Plugin.class);
        } catch (ClassNotFoundException e) {
            throw new IllegalStateException("plugin class must be on the classpath; missing " + name, e);
        }
    }

    static void deleteTree(Path root) {
        try {
            Files.walkFileTree(root, new SimpleFileVisitor<>() {
                @Override
                public FileVisitResult visitFile(Path file, BasicFileAttributes attrs) throws IOException {
                    Files.delete(file);
                    return FileVisitResult.CONTINUE;
                }

                @Override
                public FileVisitResult postVisitDirectory(Path dir, IOException exc) throws IOException {
                    Files.delete(dir);
                    return FileVisitResult.CONTINUE;
                }
            });
        } catch (IOException e) {
            System.err.println("could not delete " + root + ": " + e);
        }
    }
}
