// Grafana's PostgreSQL data source as it reads lambdaflow's views: the pgx driver (Grafana's
// since it left lib/pq), a pool's ping for the data source's health check, and each panel's
// query run as the data source runs it — on the simple query protocol (pgconn's Exec, which
// takes several statements in one query), every value read back by the type the server
// described its column with (pgtype's codecs, from the text format). Prints one JSON object
// for tests/sql.rs to compare with the HTTP API.
//
//	grafana-client PORT QUERY…
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
)

type column struct {
	Name string `json:"name"`
	// The type's name as pgtype knows it (Grafana's data source picks a frame's field type
	// by it), or its oid.
	Type string `json:"type"`
}

type result struct {
	Columns []column `json:"columns"`
	Rows    [][]any  `json:"rows"`
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run() error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pool, err := pgxpool.New(ctx, "postgres://grafana@127.0.0.1:"+os.Args[1]+"/lambdaflow?sslmode=disable")
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := pool.Ping(ctx); err != nil {
		return fmt.Errorf("ping: %w", err)
	}
	types := pgtype.NewMap()
	var out [][]result
	for _, query := range os.Args[2:] {
		c, err := pool.Acquire(ctx)
		if err != nil {
			return err
		}
		results, err := c.Conn().PgConn().Exec(ctx, query).ReadAll()
		c.Release()
		if err != nil {
			return fmt.Errorf("%s: %w", query, err)
		}
		var answers []result
		for _, r := range results {
			if r.Err != nil {
				return fmt.Errorf("%s: %w", query, r.Err)
			}
			a := result{Columns: []column{}, Rows: [][]any{}}
			for _, f := range r.FieldDescriptions {
				name := fmt.Sprint(f.DataTypeOID)
				if t, ok := types.TypeForOID(f.DataTypeOID); ok {
					name = t.Name
				}
				a.Columns = append(a.Columns, column{f.Name, name})
			}
			for _, row := range r.Rows {
				values := make([]any, len(row))
				for i, raw := range row {
					f := r.FieldDescriptions[i]
					t, ok := types.TypeForOID(f.DataTypeOID)
					if raw == nil || !ok {
						values[i] = string(raw)
						if raw == nil {
							values[i] = nil
						}
						continue
					}
					v, err := t.Codec.DecodeValue(types, f.DataTypeOID, f.Format, raw)
					if err != nil {
						return fmt.Errorf("%s: column %s (%s) value %q: %w", query, f.Name, t.Name, raw, err)
					}
					if ts, ok := v.(time.Time); ok {
						v = ts.UTC().Format(time.RFC3339)
					}
					values[i] = v
				}
				a.Rows = append(a.Rows, values)
			}
			answers = append(answers, a)
		}
		out = append(out, answers)
	}
	return json.NewEncoder(os.Stdout).Encode(out)
}
