// The PostgreSQL JDBC driver against lambdaflow's PostgreSQL protocol, as a Java application
// or DBeaver uses it: DatabaseMetaData (the driver's own pg_catalog queries), a
// PreparedStatement run past the driver's prepareThreshold (a named server-side statement
// with binary transfer), and a plain Statement. Prints one JSON object for tests/sql.rs.
//
//     java -cp postgresql.jar JdbcClient.java PORT PASSWORD CUSTOMER...
import java.sql.*;
import java.util.*;

public class JdbcClient {
    static String q(String s) { return "\"" + s.replace("\\", "\\\\").replace("\"", "\\\"") + "\""; }

    public static void main(String[] a) throws Exception {
        Properties p = new Properties();
        p.setProperty("user", "analyst");
        p.setProperty("password", a[1]);
        p.setProperty("connectTimeout", "10");
        String url = "jdbc:postgresql://127.0.0.1:" + a[0] + "/lambdaflow";
        StringBuilder out = new StringBuilder("{");
        try (Connection c = DriverManager.getConnection(url, p)) {
            DatabaseMetaData md = c.getMetaData();
            List<String> tables = new ArrayList<>();
            try (ResultSet rs = md.getTables(null, "public", "%", new String[] {"TABLE"})) {
                while (rs.next()) tables.add(q(rs.getString("TABLE_NAME")));
            }
            out.append("\"tables\":[").append(String.join(",", tables)).append("],");
            List<String> cols = new ArrayList<>();
            try (ResultSet rs = md.getColumns(null, "public", "customer_totals", "%")) {
                while (rs.next()) cols.add(q(rs.getString("COLUMN_NAME") + ":" + rs.getString("TYPE_NAME")));
            }
            out.append("\"columns\":[").append(String.join(",", cols)).append("],");
            // What tools read besides tables and columns: the product's version, foreign keys
            // (none: the driver reads pg_settings and pg_constraint's key arrays), user types.
            out.append("\"product\":").append(q(md.getDatabaseProductVersion())).append(",");
            int keys = 0;
            try (ResultSet rs = md.getImportedKeys(null, "public", "customer_totals")) {
                while (rs.next()) keys++;
            }
            try (ResultSet rs = md.getExportedKeys(null, "public", "customer_totals")) {
                while (rs.next()) keys++;
            }
            out.append("\"foreign_keys\":").append(keys).append(",");
            int udts = 0;
            try (ResultSet rs = md.getUDTs(null, "public", "%", null)) {
                while (rs.next()) udts++;
            }
            out.append("\"udts\":").append(udts).append(",");
            // The view's key, as DBeaver and Metabase read it: its primary key, its index,
            // the columns that identify a row.
            List<String> pk = new ArrayList<>();
            try (ResultSet rs = md.getPrimaryKeys(null, "public", "customer_totals")) {
                while (rs.next()) pk.add(q(rs.getString("COLUMN_NAME") + ":" + rs.getShort("KEY_SEQ") + ":" + rs.getString("PK_NAME")));
            }
            out.append("\"primary_key\":[").append(String.join(",", pk)).append("],");
            List<String> indexes = new ArrayList<>();
            try (ResultSet rs = md.getIndexInfo(null, "public", "customer_totals", false, false)) {
                while (rs.next()) indexes.add(q(rs.getString("INDEX_NAME") + ":" + rs.getString("COLUMN_NAME")
                        + ":unique=" + !rs.getBoolean("NON_UNIQUE") + ":" + rs.getString("ASC_OR_DESC")));
            }
            out.append("\"indexes\":[").append(String.join(",", indexes)).append("],");
            List<String> best = new ArrayList<>();
            try (ResultSet rs = md.getBestRowIdentifier(null, "public", "customer_totals", DatabaseMetaData.bestRowSession, false)) {
                while (rs.next()) best.add(q(rs.getString("COLUMN_NAME")));
            }
            out.append("\"best_row\":[").append(String.join(",", best)).append("],");
            // Read-only: the one privilege on a view is SELECT.
            List<String> privileges = new ArrayList<>();
            try (ResultSet rs = md.getTablePrivileges(null, "public", "customer_totals")) {
                while (rs.next()) privileges.add(q(rs.getString("GRANTEE") + ":" + rs.getString("PRIVILEGE")));
            }
            out.append("\"privileges\":[").append(String.join(",", privileges)).append("],");
            List<String> lookups = new ArrayList<>();
            try (PreparedStatement ps = c.prepareStatement(
                    "SELECT total_amount FROM customer_totals WHERE customer = ?")) {
                // Past prepareThreshold (5): the driver switches to a named statement.
                for (int round = 0; round < 3; round++) {
                    lookups.clear();
                    for (int i = 2; i < a.length; i++) {
                        ps.setString(1, a[i]);
                        try (ResultSet rs = ps.executeQuery()) {
                            lookups.add(q(a[i]) + ":" + (rs.next() ? Long.toString(rs.getLong(1)) : "null"));
                        }
                    }
                }
            }
            out.append("\"lookups\":{").append(String.join(",", lookups)).append("},");
            List<String> rows = new ArrayList<>();
            try (Statement s = c.createStatement();
                 ResultSet rs = s.executeQuery("SELECT customer, total_amount FROM customer_totals ORDER BY customer")) {
                while (rs.next()) rows.add(q(rs.getString(1)) + ":" + rs.getLong(2));
            }
            out.append("\"rows\":{").append(String.join(",", rows)).append("}}");
        }
        System.out.println(out);
    }
}
