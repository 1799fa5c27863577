// The PostgreSQL JDBC driver through pgsluice: prepareThreshold=1 makes every PreparedStatement a named
// server-side statement from its second execution on; later executions bind it on whichever server the
// transaction lands. Run as a single-file program: java -cp postgresql.jar JdbcMatrix.java
// TLS as libpq takes it from the environment: PGSSLMODE (plain text when unset) and PGSSLROOTCERT.
import java.net.URLEncoder;
import java.nio.charset.StandardCharsets;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ConcurrentLinkedQueue;

public class JdbcMatrix {
    static final int CONNS = 6, ROUNDS = 30;

    static void check(boolean ok, String what) {
        if (!ok) throw new IllegalStateException("check failed: " + what);
    }

    static long one(PreparedStatement ps) throws Exception {
        try (ResultSet rs = ps.executeQuery()) {
            check(rs.next(), "a row");
            return rs.getLong(1);
        }
    }

    static void work(int n, String url, String user, String pw) throws Exception {
        try (Connection c = DriverManager.getConnection(url, user, pw)) {
            PreparedStatement dbl = c.prepareStatement("select ?::int4 * 2");
            PreparedStatement cnt = c.prepareStatement("select count(*) from accounts where id <= ?");
            PreparedStatement touch = c.prepareStatement("update accounts set balance = balance where id = ?");
            // setSchema is a session SET: it must follow this connection onto whichever server it lands.
            String schema = "jdbc_schema_" + n;
            c.setSchema(schema);
            PreparedStatement path = c.prepareStatement("select current_setting('search_path')");
            for (int i = 0; i < ROUNDS; i++) {
                try (ResultSet rs = path.executeQuery()) {
                    check(rs.next() && rs.getString(1).equals(schema), "search_path " + schema);
                }
                int v = n * 1000 + i;
                dbl.setInt(1, v);
                check(one(dbl) == 2L * v, "double " + v);
                cnt.setInt(1, i % 12);
                check(one(cnt) == Math.min(i % 12, 10), "count " + i);
                c.setAutoCommit(false);
                touch.setInt(1, 1 + i % 10);
                check(touch.executeUpdate() == 1, "update");
                dbl.setInt(1, v + 1);
                check(one(dbl) == 2L * (v + 1), "double in tx");
                if (i % 2 == 0) c.commit(); else c.rollback();
                c.setAutoCommit(true);
            }
        }
    }

    public static void main(String[] args) throws Exception {
        String rootcert = System.getenv("PGSSLROOTCERT");
        String url = "jdbc:postgresql://" + System.getenv("PGHOST") + ":" + System.getenv("PGPORT") + "/"
                + System.getenv("PGDATABASE") + "?prepareThreshold=1&sslmode="
                + URLEncoder.encode(System.getenv().getOrDefault("PGSSLMODE", "disable"), StandardCharsets.UTF_8)
                + (rootcert == null ? "" : "&sslrootcert=" + URLEncoder.encode(rootcert, StandardCharsets.UTF_8));
        String user = System.getenv("PGUSER"), pw = System.getenv("PGPASSWORD");
        ConcurrentLinkedQueue<String> errors = new ConcurrentLinkedQueue<>();
        List<Thread> threads = new ArrayList<>();
        for (int n = 0; n < CONNS; n++) {
            final int id = n;
            Thread t = new Thread(() -> {
                try {
                    work(id, url, user, pw);
                } catch (Exception e) {
                    errors.add("conn " + id + ": " + e);
                }
            });
            t.start();
            threads.add(t);
        }
        for (Thread t : threads) t.join();
        if (!errors.isEmpty()) {
            errors.forEach(System.out::println);
            System.exit(1);
        }
        System.out.println("pgjdbc " + org.postgresql.util.DriverInfo.DRIVER_VERSION + ": " + CONNS
                + " connections x " + ROUNDS + " rounds ok");
    }
}
