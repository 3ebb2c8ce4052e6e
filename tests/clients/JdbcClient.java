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

    /** The rows of a prepared query with text parameters, each row its columns joined by '|'. */
    static String rows(Connection c, String sql, String... params) throws SQLException {
        List<String> rows = new ArrayList<>();
        try (PreparedStatement ps = c.prepareStatement(sql)) {
            for (int i = 0; i < params.length; i++) ps.setString(i + 1, params[i]);
            try (ResultSet rs = ps.executeQuery()) {
                int n = rs.getMetaData().getColumnCount();
                while (rs.next()) {
                    List<String> cols = new ArrayList<>();
                    for (int i = 1; i <= n; i++) cols.add(String.valueOf(rs.getString(i)));
                    rows.add(q(String.join("|", cols)));
                }
            }
        }
        return "[" + String.join(",", rows) + "]";
    }

    static final String METABASE_TABLES =
        "SELECT \"n\".\"nspname\" AS \"schema\", \"c\".\"relname\" AS \"name\", CASE \"c\".\"relkind\" WHEN 'r' THEN 'TABLE' "
        + "WHEN 'p' THEN 'PARTITIONED TABLE' WHEN 'v' THEN 'VIEW' WHEN 'f' THEN 'FOREIGN TABLE' WHEN 'm' THEN 'MATERIALIZED VIEW' "
        + "ELSE NULL END AS \"type\", \"d\".\"description\" AS \"description\", \"stat\".\"n_live_tup\" AS \"estimated_row_count\" "
        + "FROM \"pg_catalog\".\"pg_class\" AS \"c\" INNER JOIN \"pg_catalog\".\"pg_namespace\" AS \"n\" ON \"c\".\"relnamespace\" = \"n\".\"oid\" "
        + "LEFT JOIN \"pg_catalog\".\"pg_description\" AS \"d\" ON (\"c\".\"oid\" = \"d\".\"objoid\") AND (\"d\".\"objsubid\" = 0) "
        + "AND (\"d\".\"classoid\" = 'pg_class'::regclass) LEFT JOIN \"pg_stat_user_tables\" AS \"stat\" ON (\"n\".\"nspname\" = \"stat\".\"schemaname\") "
        + "AND (\"c\".\"relname\" = \"stat\".\"relname\") WHERE (\"c\".\"relnamespace\" = \"n\".\"oid\") AND (\"n\".\"nspname\" !~ '^pg_') "
        + "AND (\"n\".\"nspname\" <> 'information_schema') AND c.relkind in ('r', 'p', 'v', 'f', 'm') AND (\"n\".\"nspname\" IN (?)) "
        + "ORDER BY \"type\" ASC, \"schema\" ASC, \"name\" ASC";

    static final String METABASE_FIELDS =
        "SELECT \"c\".\"column_name\" AS \"name\", CASE WHEN \"c\".\"udt_schema\" IN ('public', 'pg_catalog') THEN FORMAT('%s', \"c\".\"udt_name\") "
        + "ELSE FORMAT('\"%s\".\"%s\"', \"c\".\"udt_schema\", \"c\".\"udt_name\") END AS \"database-type\", \"c\".\"ordinal_position\" - 1 AS \"database-position\", "
        + "\"c\".\"table_schema\" AS \"table-schema\", \"c\".\"table_name\" AS \"table-name\", \"pk\".\"column_name\" IS NOT NULL AS \"pk?\", "
        + "COL_DESCRIPTION(CAST(CAST(FORMAT('%I.%I', CAST(\"c\".\"table_schema\" AS TEXT), CAST(\"c\".\"table_name\" AS TEXT)) AS REGCLASS) AS OID), "
        + "\"c\".\"ordinal_position\") AS \"field-comment\", ((\"column_default\" IS NULL) OR (LOWER(\"column_default\") = 'null')) AND (\"is_nullable\" = 'NO') "
        + "AND NOT (((\"column_default\" IS NOT NULL) AND (\"column_default\" LIKE '%nextval(%')) OR (\"is_identity\" <> 'NO')) AS \"database-required\", "
        + "((\"column_default\" IS NOT NULL) AND (\"column_default\" LIKE '%nextval(%')) OR (\"is_identity\" <> 'NO') AS \"database-is-auto-increment\" "
        + "FROM \"information_schema\".\"columns\" AS \"c\" LEFT JOIN (SELECT \"tc\".\"table_schema\", \"tc\".\"table_name\", \"kc\".\"column_name\" "
        + "FROM \"information_schema\".\"table_constraints\" AS \"tc\" INNER JOIN \"information_schema\".\"key_column_usage\" AS \"kc\" "
        + "ON (\"tc\".\"constraint_name\" = \"kc\".\"constraint_name\") AND (\"tc\".\"table_schema\" = \"kc\".\"table_schema\") "
        + "AND (\"tc\".\"table_name\" = \"kc\".\"table_name\") WHERE \"tc\".\"constraint_type\" = 'PRIMARY KEY') AS \"pk\" "
        + "ON (\"c\".\"table_schema\" = \"pk\".\"table_schema\") AND (\"c\".\"table_name\" = \"pk\".\"table_name\") AND (\"c\".\"column_name\" = \"pk\".\"column_name\") "
        + "WHERE c.table_schema !~ '^information_schema|catalog_history|pg_' AND (\"c\".\"table_schema\" IN (?)) AND (\"c\".\"table_name\" IN (?)) "
        + "UNION ALL SELECT \"pa\".\"attname\" AS \"name\", CASE WHEN \"ptn\".\"nspname\" IN ('public', 'pg_catalog') THEN FORMAT('%s', \"pt\".\"typname\") "
        + "ELSE FORMAT('\"%s\".\"%s\"', \"ptn\".\"nspname\", \"pt\".\"typname\") END AS \"database-type\", \"pa\".\"attnum\" - 1 AS \"database-position\", "
        + "\"pn\".\"nspname\" AS \"table-schema\", \"pc\".\"relname\" AS \"table-name\", FALSE AS \"pk?\", NULL AS \"field-comment\", "
        + "FALSE AS \"database-required\", FALSE AS \"database-is-auto-increment\" FROM \"pg_catalog\".\"pg_class\" AS \"pc\" "
        + "INNER JOIN \"pg_catalog\".\"pg_namespace\" AS \"pn\" ON \"pn\".\"oid\" = \"pc\".\"relnamespace\" "
        + "INNER JOIN \"pg_catalog\".\"pg_attribute\" AS \"pa\" ON \"pa\".\"attrelid\" = \"pc\".\"oid\" "
        + "INNER JOIN \"pg_catalog\".\"pg_type\" AS \"pt\" ON \"pt\".\"oid\" = \"pa\".\"atttypid\" "
        + "INNER JOIN \"pg_catalog\".\"pg_namespace\" AS \"ptn\" ON \"ptn\".\"oid\" = \"pt\".\"typnamespace\" "
        + "WHERE (\"pc\".\"relkind\" = 'm') AND (\"pa\".\"attnum\" >= 1) AND (\"pn\".\"nspname\" IN (?)) AND (\"pc\".\"relname\" IN (?)) "
        + "ORDER BY \"table-schema\" ASC, \"table-name\" ASC, \"database-position\" ASC";

    static final String METABASE_FKS =
        "SELECT \"fk_ns\".\"nspname\" AS \"fk-table-schema\", \"fk_table\".\"relname\" AS \"fk-table-name\", \"fk_column\".\"attname\" AS \"fk-column-name\", "
        + "\"pk_ns\".\"nspname\" AS \"pk-table-schema\", \"pk_table\".\"relname\" AS \"pk-table-name\", \"pk_column\".\"attname\" AS \"pk-column-name\" "
        + "FROM \"pg_constraint\" AS \"c\" INNER JOIN \"pg_class\" AS \"fk_table\" ON \"c\".\"conrelid\" = \"fk_table\".\"oid\" "
        + "INNER JOIN \"pg_namespace\" AS \"fk_ns\" ON \"c\".\"connamespace\" = \"fk_ns\".\"oid\" "
        + "INNER JOIN \"pg_attribute\" AS \"fk_column\" ON \"c\".\"conrelid\" = \"fk_column\".\"attrelid\" "
        + "INNER JOIN \"pg_class\" AS \"pk_table\" ON \"c\".\"confrelid\" = \"pk_table\".\"oid\" "
        + "INNER JOIN \"pg_namespace\" AS \"pk_ns\" ON \"pk_table\".\"relnamespace\" = \"pk_ns\".\"oid\" "
        + "INNER JOIN \"pg_attribute\" AS \"pk_column\" ON \"c\".\"confrelid\" = \"pk_column\".\"attrelid\" "
        + "WHERE fk_ns.nspname !~ '^information_schema|catalog_history|pg_' AND (\"c\".\"contype\" = 'f'::char) "
        + "AND (\"fk_column\".\"attnum\" = ANY(c.conkey)) AND (\"pk_column\".\"attnum\" = ANY(c.confkey)) "
        + "AND (\"fk_table\".\"relname\" IN (?)) AND (\"fk_ns\".\"nspname\" IN (?)) ORDER BY \"fk-table-schema\" ASC, \"fk-table-name\" ASC";

    static final String METABASE_INDEXES =
        "SELECT \"tmp\".\"table-schema\", \"tmp\".\"table-name\", TRIM(BOTH '\"' FROM PG_CATALOG.PG_GET_INDEXDEF(\"tmp\".\"ci_oid\", \"tmp\".\"pos\", FALSE)) AS \"field-name\" "
        + "FROM (SELECT \"n\".\"nspname\" AS \"table-schema\", \"ct\".\"relname\" AS \"table-name\", \"ci\".\"oid\" AS \"ci_oid\", "
        + "(information_schema._pg_expandarray(\"i\".\"indkey\")).n AS \"pos\" FROM \"pg_catalog\".\"pg_class\" AS \"ct\" "
        + "INNER JOIN \"pg_catalog\".\"pg_namespace\" AS \"n\" ON \"ct\".\"relnamespace\" = \"n\".\"oid\" "
        + "INNER JOIN \"pg_catalog\".\"pg_index\" AS \"i\" ON \"ct\".\"oid\" = \"i\".\"indrelid\" "
        + "INNER JOIN \"pg_catalog\".\"pg_class\" AS \"ci\" ON \"ci\".\"oid\" = \"i\".\"indexrelid\" "
        + "WHERE (PG_CATALOG.PG_GET_EXPR(\"i\".\"indpred\", \"i\".\"indrelid\") IS NULL) AND n.nspname !~ '^information_schema|catalog_history|pg_' "
        + "AND (\"n\".\"nspname\" IN (?)) AND (\"ct\".\"relname\" IN (?))) AS \"tmp\" WHERE \"tmp\".\"pos\" = 1";

    // DBeaver's navigator (its PostgreSQL plugin's queries, sent as prepared statements with
    // the oids it read before as parameters): schemas, then a schema's tables (with their row
    // counts, reltuples), then a table's columns, constraints and indexes.
    static final String DBEAVER_SCHEMAS =
        "SELECT n.oid,n.*,d.description FROM pg_catalog.pg_namespace n\n"
        + "LEFT OUTER JOIN pg_catalog.pg_description d ON d.objoid=n.oid AND d.objsubid=0 AND d.classoid='pg_namespace'::regclass\n"
        + " ORDER BY nspname";
    static final String DBEAVER_TABLES =
        "SELECT c.oid,c.*,d.description,pg_catalog.pg_get_expr(c.relpartbound, c.oid) as partition_expr,  pg_catalog.pg_get_partkeydef(c.oid) as partition_key \n"
        + "FROM pg_catalog.pg_class c\n"
        + "LEFT OUTER JOIN pg_catalog.pg_description d ON d.objoid=c.oid AND d.objsubid=0 AND d.classoid='pg_class'::regclass\n"
        + "WHERE c.relnamespace=? AND c.relkind not in ('i','I','c')";
    static final String DBEAVER_COLUMNS =
        "SELECT c.relname,a.*,pg_catalog.pg_get_expr(ad.adbin, ad.adrelid, true) as def_value,dsc.description,dep.objid\n"
        + "FROM pg_catalog.pg_attribute a\nINNER JOIN pg_catalog.pg_class c ON (a.attrelid=c.oid)\n"
        + "LEFT OUTER JOIN pg_catalog.pg_attrdef ad ON (a.attrelid=ad.adrelid AND a.attnum = ad.adnum)\n"
        + "LEFT OUTER JOIN pg_catalog.pg_description dsc ON (c.oid=dsc.objoid AND a.attnum = dsc.objsubid)\n"
        + "LEFT OUTER JOIN pg_depend dep on dep.refobjid = a.attrelid AND dep.deptype = 'i' and dep.refobjsubid = a.attnum and dep.classid = dep.refclassid\n"
        + "WHERE NOT a.attisdropped AND c.relkind not in ('i','I','c') AND c.oid=?\nORDER BY a.attnum";
    static final String DBEAVER_CONSTRAINTS =
        "SELECT c.oid,c.*,t.relname as tabrelname,rt.relnamespace as refnamespace,d.description, "
        + "case when c.contype='c' then \"substring\"(pg_get_constraintdef(c.oid), 7) else null end consrc_copy\n"
        + "FROM pg_catalog.pg_constraint c\nINNER JOIN pg_catalog.pg_class t ON t.oid=c.conrelid\n"
        + "LEFT OUTER JOIN pg_catalog.pg_class rt ON rt.oid=c.confrelid\n"
        + "LEFT OUTER JOIN pg_catalog.pg_description d ON d.objoid=c.oid AND d.objsubid=0 AND d.classoid='pg_constraint'::regclass\n"
        + "WHERE c.conrelid=?\nORDER BY c.oid";
    static final String DBEAVER_INDEXES =
        "SELECT i.*,i.indkey as keys,c.relname,c.relnamespace,c.relam,c.reltablespace,tc.relname as tabrelname,dsc.description,"
        + "pg_catalog.pg_get_expr(i.indpred, i.indrelid) as pred_expr,pg_catalog.pg_get_expr(i.indexprs, i.indrelid, true) as expr,"
        + "pg_catalog.pg_relation_size(i.indexrelid) as index_rel_size,pg_catalog.pg_stat_get_numscans(i.indexrelid) as index_num_scans\n"
        + "FROM pg_catalog.pg_index i\nINNER JOIN pg_catalog.pg_class c ON c.oid=i.indexrelid\n"
        + "INNER JOIN pg_catalog.pg_class tc ON tc.oid=i.indrelid\n"
        + "LEFT OUTER JOIN pg_catalog.pg_description dsc ON i.indexrelid=dsc.objoid\n"
        + "WHERE  i.indrelid=? ORDER BY c.relname";

    /** The `columns` of each row of `sql` (one long parameter), read by name as DBeaver reads them. */
    static List<String> named(Connection c, String sql, Long param, String... columns) throws SQLException {
        List<String> rows = new ArrayList<>();
        try (PreparedStatement ps = c.prepareStatement(sql)) {
            if (param != null) ps.setLong(1, param);
            try (ResultSet rs = ps.executeQuery()) {
                while (rs.next()) {
                    List<String> cols = new ArrayList<>();
                    for (String col : columns) cols.add(String.valueOf(rs.getString(col)));
                    rows.add(String.join("|", cols));
                }
            }
        }
        return rows;
    }

    /** DBeaver's navigator down to the view `table`: what it shows at each step. */
    static String dbeaver(Connection c, String table) throws SQLException {
        List<String> out = new ArrayList<>();
        long schema = -1, view = -1;
        for (String row : named(c, DBEAVER_SCHEMAS, null, "oid", "nspname")) {
            if (row.endsWith("|public")) schema = Long.parseLong(row.split("\\|")[0]);
        }
        // Its first column is `oid`, as DBeaver reads it by name.
        try (PreparedStatement ps = c.prepareStatement(DBEAVER_TABLES)) {
            ps.setLong(1, schema);
            try (ResultSet rs = ps.executeQuery()) {
                out.add(q("first column " + rs.getMetaData().getColumnLabel(1)));
                List<String> tables = new ArrayList<>();
                while (rs.next()) {
                    tables.add(q("table " + rs.getString("relname") + ":" + rs.getString("relkind") + ":" + rs.getLong("reltuples")));
                    if (rs.getString("relname").equals(table)) view = rs.getLong("oid");
                }
                Collections.sort(tables);
                out.addAll(tables);
            }
        }
        for (String r : named(c, DBEAVER_COLUMNS, view, "attname", "atttypid", "attnotnull")) out.add(q("column " + r));
        for (String r : named(c, DBEAVER_CONSTRAINTS, view, "conname", "contype", "tabrelname")) out.add(q("constraint " + r));
        for (String r : named(c, DBEAVER_INDEXES, view, "relname", "indisprimary", "tabrelname")) out.add(q("index " + r));
        return "[" + String.join(",", out) + "]";
    }

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
            // The types, with the JDBC type the driver finds for each (an array by its input
            // function, typinput = 'pg_catalog.array_in'::regproc, as DBeaver's connection asks).
            List<String> types = new ArrayList<>();
            try (ResultSet rs = md.getTypeInfo()) {
                while (rs.next()) {
                    String name = rs.getString("TYPE_NAME");
                    if (name.equals("int8") || name.equals("_int4")) types.add(q(name + ":" + rs.getInt("DATA_TYPE")));
                }
            }
            out.append("\"type_info\":[").append(String.join(",", types)).append("],");
            // Read-only: the one privilege on a view is SELECT.
            List<String> privileges = new ArrayList<>();
            try (ResultSet rs = md.getTablePrivileges(null, "public", "customer_totals")) {
                while (rs.next()) privileges.add(q(rs.getString("GRANTEE") + ":" + rs.getString("PRIVILEGE")));
            }
            out.append("\"privileges\":[").append(String.join(",", privileges)).append("],");
            List<String> columnPrivileges = new ArrayList<>();
            try (ResultSet rs = md.getColumnPrivileges(null, "public", "customer_totals", "%")) {
                while (rs.next()) columnPrivileges.add(q(rs.getString("COLUMN_NAME") + ":" + rs.getString("GRANTEE") + ":" + rs.getString("PRIVILEGE")));
            }
            out.append("\"column_privileges\":[").append(String.join(",", columnPrivileges)).append("],");
            // A function and its columns (pg_get_function_result, proallargtypes as Long[]).
            List<String> functions = new ArrayList<>();
            try (ResultSet rs = md.getFunctions(null, "pg_catalog", "json_each")) {
                while (rs.next()) functions.add(q(rs.getString("FUNCTION_NAME") + ":" + rs.getInt("FUNCTION_TYPE")));
            }
            try (ResultSet rs = md.getFunctionColumns(null, "pg_catalog", "json_each", "%")) {
                while (rs.next()) functions.add(q(rs.getString("COLUMN_NAME") + ":" + rs.getInt("COLUMN_TYPE") + ":" + rs.getString("TYPE_NAME")));
            }
            out.append("\"functions\":[").append(String.join(",", functions)).append("],");
            // Metabase's sync, as its PostgreSQL driver sends it through this driver: the
            // tables, their fields (type, position, primary key, required), foreign keys and
            // first columns of indexes, with the schema and table as parameters.
            out.append("\"dbeaver\":").append(dbeaver(c, "customer_totals")).append(",");
            out.append("\"metabase_tables\":").append(rows(c, METABASE_TABLES, "public")).append(",");
            out.append("\"metabase_fields\":").append(rows(c, METABASE_FIELDS, "public", "customer_totals", "public", "customer_totals")).append(",");
            out.append("\"metabase_fks\":").append(rows(c, METABASE_FKS, "customer_totals", "public")).append(",");
            out.append("\"metabase_indexes\":").append(rows(c, METABASE_INDEXES, "public", "customer_totals")).append(",");
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
