//! Compiling a view: DataFusion plans and type-checks the SQL; then the plan is checked for
//! what both layers can maintain and split at its aggregate — WHERE, the group keys and the
//! aggregate arguments below it, the post steps (HAVING, SELECT, ORDER BY, LIMIT) above it —
//! and every part is compiled once to physical expressions.

use std::sync::Arc;

use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::datatypes::Schema;
use datafusion::catalog::MemTable;
use datafusion::common::{DFSchema, DFSchemaRef};
use datafusion::error::DataFusionError;
use datafusion::execution::SessionState;
use datafusion::logical_expr::{
    Aggregate, Expr, ExprSchemable, FetchType, Limit, LogicalPlan, SkipType, SortExpr,
};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;

use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;

use super::window::{self, Window};
use super::{AggKind, AggSpec, PhysStep, Physical, ViewDef, state};
use crate::error::{Error, Result};
use crate::event::EventSchema;

/// A step after the aggregate, as planned (in the order it runs).
enum PostStep {
    Filter(Expr, DFSchemaRef),
    Project(Vec<Expr>, DFSchemaRef),
    Sort(Vec<SortExpr>, DFSchemaRef),
    Limit { skip: usize, fetch: Option<usize> },
}

/// A DataFusion session whose catalog holds one empty table with the event schema, under the
/// configured table name. Used to plan views; the batch layer registers real data the same way.
pub fn planning_context(table: &str, schema: &EventSchema) -> Result<SessionContext> {
    let ctx = SessionContext::new();
    ctx.register_udf(window::udf());
    let empty = MemTable::try_new(schema.arrow_schema(), vec![vec![]])?;
    ctx.register_table(table, Arc::new(empty))?;
    Ok(ctx)
}

impl ViewDef {
    /// Plans `sql` against the event table and splits it for both layers. Errors name the view
    /// and what is wrong: a parse error, a missing column, or an unsupported construct.
    pub async fn compile(name: &str, sql: &str, table: &str, schema: &EventSchema) -> Result<Self> {
        let ctx = planning_context(table, schema)?;
        let state = ctx.state();
        let dialect = state.config_options().sql_parser.dialect;
        let mut statement = state
            .sql_to_statement(sql, &dialect)
            .map_err(view_err(name))?;
        window_references(name, &mut statement)?;
        let plan = state
            .statement_to_plan(statement)
            .await
            .map_err(view_err(name))?;
        let plan = state
            .analyzer()
            .execute_and_check(plan, state.config_options(), |_, _| {})
            .map_err(view_err(name))?;
        let output_schema = Arc::new(plan.schema().as_arrow().clone());
        let (post, agg) = split_at_aggregate(name, &plan)?;
        let filter = where_clause(name, agg, table)?;
        let aggs = agg
            .aggr_expr
            .iter()
            .map(|e| aggregate(name, e, agg.input.schema()))
            .collect::<Result<Vec<_>>>()?;
        let agg_schema = Arc::clone(&agg.schema);
        let state_schema = state::state_schema(&agg_schema, agg.group_expr.len(), &aggs);
        let agg_names = aggregate_names(agg, &post);
        let compiler = Compiler {
            name,
            state: &state,
        };
        let phys = compiler.physical(agg, filter.as_ref(), &aggs, post)?;
        let window = compiler.window(agg)?;
        let mut def = ViewDef {
            name: name.to_string(),
            sql: sql.to_string(),
            filter,
            group_exprs: agg.group_expr.clone(),
            aggs,
            agg_names,
            agg_schema,
            state_schema,
            output_schema,
            phys,
            window,
            watermark: None,
            row_plan: None,
        };
        def.row_plan = state::RowPlan::new(&def, schema);
        Ok(def)
    }
}

fn view_err(name: &str) -> impl Fn(DataFusionError) -> Error + '_ {
    move |e| Error::View {
        view: name.to_string(),
        msg: e.strip_backtrace().to_string(),
    }
}

fn unsupported(view: &str, what: impl std::fmt::Display) -> Error {
    Error::View {
        view: view.to_string(),
        msg: format!(
            "{what} cannot be maintained incrementally by the speed layer; supported: \
             WHERE, GROUP BY, SUM, COUNT, MIN, MAX, AVG, HAVING, ORDER BY, LIMIT"
        ),
    }
}

/// Walks down from the top of the plan to its aggregate: the steps above it (returned in the
/// order they run) and the aggregate itself.
fn split_at_aggregate<'p>(
    name: &str,
    plan: &'p LogicalPlan,
) -> Result<(Vec<PostStep>, &'p Aggregate)> {
    let mut post_rev = Vec::new();
    let mut node = plan;
    loop {
        node = match node {
            LogicalPlan::Limit(l) => {
                post_rev.push(limit_step(name, l)?);
                &l.input
            }
            LogicalPlan::Sort(s) => {
                if s.fetch.is_some() {
                    post_rev.push(PostStep::Limit {
                        skip: 0,
                        fetch: s.fetch,
                    });
                }
                post_rev.push(PostStep::Sort(s.expr.clone(), Arc::clone(s.input.schema())));
                &s.input
            }
            LogicalPlan::Projection(p) => {
                post_rev.push(PostStep::Project(
                    p.expr.clone(),
                    Arc::clone(p.input.schema()),
                ));
                &p.input
            }
            LogicalPlan::Filter(f) => {
                post_rev.push(PostStep::Filter(
                    f.predicate.clone(),
                    Arc::clone(f.input.schema()),
                ));
                &f.input
            }
            LogicalPlan::Aggregate(a) => {
                post_rev.reverse();
                return Ok((post_rev, a));
            }
            LogicalPlan::TableScan(_) => {
                return Err(Error::View {
                    view: name.to_string(),
                    msg: "a view must aggregate (GROUP BY and/or SUM, COUNT, MIN, MAX, AVG): \
                          a plain projection has no state to merge between layers"
                        .into(),
                });
            }
            other => return Err(unsupported(name, describe(other))),
        };
    }
}

/// LIMIT/OFFSET with literal values.
fn limit_step(name: &str, l: &Limit) -> Result<PostStep> {
    let skip = match l.get_skip_type().map_err(view_err(name))? {
        SkipType::Literal(n) => n,
        SkipType::UnsupportedExpr => return Err(unsupported(name, "a computed OFFSET")),
    };
    let fetch = match l.get_fetch_type().map_err(view_err(name))? {
        FetchType::Literal(n) => n,
        FetchType::UnsupportedExpr => return Err(unsupported(name, "a computed LIMIT")),
    };
    Ok(PostStep::Limit { skip, fetch })
}

/// Below the aggregate: WHERE filters over a scan of the event table, as one predicate.
fn where_clause(name: &str, agg: &Aggregate, table: &str) -> Result<Option<Expr>> {
    let mut filters = Vec::new();
    let mut below: &LogicalPlan = &agg.input;
    loop {
        match below {
            LogicalPlan::Filter(f) => {
                filters.push(f.predicate.clone());
                below = &f.input;
            }
            LogicalPlan::TableScan(t) if t.table_name.table() == table => break,
            other => return Err(unsupported(name, describe(other))),
        }
    }
    Ok(filters.into_iter().reduce(Expr::and))
}

/// One aggregate of the view, checked: a supported function of one argument, without DISTINCT,
/// FILTER or ORDER BY.
fn aggregate(name: &str, e: &Expr, input: &DFSchemaRef) -> Result<AggSpec> {
    let e = match e {
        Expr::Alias(a) => a.expr.as_ref(),
        e => e,
    };
    let Expr::AggregateFunction(f) = e else {
        return Err(unsupported(name, format!("aggregate expression `{e}`")));
    };
    let fname = f.func.name().to_ascii_lowercase();
    if f.params.distinct {
        return Err(unsupported(
            name,
            format!("{}(DISTINCT ..)", fname.to_uppercase()),
        ));
    }
    if f.params.filter.is_some() || !f.params.order_by.is_empty() {
        return Err(unsupported(
            name,
            format!("{} with FILTER or ORDER BY", fname.to_uppercase()),
        ));
    }
    let [arg] = f.params.args.as_slice() else {
        return Err(unsupported(
            name,
            format!("{fname} with {} arguments", f.params.args.len()),
        ));
    };
    let arg_type = arg.get_type(input).map_err(view_err(name))?;
    let kind = AggKind::new(&fname, &arg_type)
        .ok_or_else(|| unsupported(name, format!("aggregate `{fname}` over {arg_type}")))?;
    Ok(AggSpec {
        kind,
        arg: arg.clone(),
        arg_type,
    })
}

/// How the view's SELECT names each aggregate: `total_amount` for `SUM(amount) AS
/// total_amount`, DataFusion's name (`sum(events.amount)`) when SELECT computes on it instead.
fn aggregate_names(agg: &Aggregate, post: &[PostStep]) -> Vec<String> {
    let fields = &agg.schema.fields()[agg.group_expr.len()..];
    let mut names: Vec<String> = fields.iter().map(|f| f.name().clone()).collect();
    let select = post.iter().find_map(|s| match s {
        PostStep::Project(exprs, _) => Some(exprs),
        _ => None,
    });
    for e in select.into_iter().flatten() {
        let Expr::Alias(a) = e else { continue };
        // `COUNT(*) AS n` is planned as an alias of an alias.
        let mut inner = a.expr.as_ref();
        while let Expr::Alias(b) = inner {
            inner = b.expr.as_ref();
        }
        if let Expr::Column(c) = inner
            && let Some(i) = fields.iter().position(|f| *f.name() == c.name)
        {
            names[i] = a.name.clone();
        }
    }
    names
}

/// Compiles logical expressions of one view to physical ones.
struct Compiler<'a> {
    name: &'a str,
    state: &'a SessionState,
}

impl Compiler<'_> {
    fn expr(&self, e: &Expr, schema: &DFSchema) -> Result<Arc<dyn PhysicalExpr>> {
        self.state
            .create_physical_expr(e.clone(), schema)
            .map_err(view_err(self.name))
    }

    /// The view's event-time window, if a GROUP BY key is one (at most one may be).
    fn window(&self, agg: &Aggregate) -> Result<Option<Window>> {
        let mut found = None;
        for (key, e) in agg.group_expr.iter().enumerate() {
            let Some((time, shape)) = Window::shape_of(e).map_err(|e| Error::View {
                view: self.name.to_string(),
                msg: e.to_string(),
            })?
            else {
                continue;
            };
            if found.is_some() {
                return Err(Error::View {
                    view: self.name.to_string(),
                    msg: "GROUP BY has more than one window(); a view has one event-time window"
                        .into(),
                });
            }
            found = Some(Window {
                key,
                time: self.expr(&time, agg.input.schema())?,
                shape,
            });
        }
        Ok(found)
    }

    /// Every part of the view as physical expressions, built once at start-up.
    fn physical(
        &self,
        agg: &Aggregate,
        filter: Option<&Expr>,
        aggs: &[AggSpec],
        post: Vec<PostStep>,
    ) -> Result<Physical> {
        let input = agg.input.schema();
        Ok(Physical {
            filter: filter.map(|f| self.expr(f, input)).transpose()?,
            groups: agg
                .group_expr
                .iter()
                .map(|e| self.expr(e, input))
                .collect::<Result<_>>()?,
            args: aggs
                .iter()
                .map(|a| self.expr(&a.arg, input))
                .collect::<Result<_>>()?,
            post: post
                .iter()
                .map(|s| self.post_step(s))
                .collect::<Result<_>>()?,
        })
    }

    fn post_step(&self, step: &PostStep) -> Result<PhysStep> {
        Ok(match step {
            PostStep::Filter(e, s) => PhysStep::Filter(self.expr(e, s)?),
            PostStep::Project(es, s) => self.projection(es, s)?,
            PostStep::Sort(es, s) => PhysStep::Sort(
                es.iter()
                    .map(|se| {
                        let opts = SortOptions {
                            descending: !se.asc,
                            nulls_first: se.nulls_first,
                        };
                        Ok((self.expr(&se.expr, s)?, opts))
                    })
                    .collect::<Result<Vec<_>>>()?,
            ),
            PostStep::Limit { skip, fetch } => PhysStep::Limit {
                skip: *skip,
                fetch: *fetch,
            },
        })
    }

    /// A projection with its output schema: each expression's type, under its SQL name.
    fn projection(&self, es: &[Expr], s: &DFSchema) -> Result<PhysStep> {
        let exprs = es
            .iter()
            .map(|e| self.expr(e, s))
            .collect::<Result<Vec<_>>>()?;
        let input = s.as_arrow().clone();
        let fields = exprs
            .iter()
            .zip(es)
            .map(|(p, e)| {
                let f = p.return_field(&input)?;
                Ok(f.as_ref().clone().with_name(e.schema_name().to_string()))
            })
            .collect::<Result<Vec<_>, DataFusionError>>()
            .map_err(view_err(self.name))?;
        Ok(PhysStep::Project(exprs, Arc::new(Schema::new(fields))))
    }
}

/// Spark's names for a GROUP BY `window(..)`: `window`, `window.start` and `window.end` in
/// SELECT, HAVING and ORDER BY stand for the window key (its struct, or one of its bounds), as
/// the group key Spark names `window`. A bare `window.start` in SELECT is named `start`, as
/// in Spark.
fn window_references(name: &str, statement: &mut DFStatement) -> Result<()> {
    let DFStatement::Statement(st) = statement else {
        return Ok(());
    };
    let ast::Statement::Query(query) = st.as_mut() else {
        return Ok(());
    };
    let ast::SetExpr::Select(select) = query.body.as_mut() else {
        return Ok(());
    };
    let ast::GroupByExpr::Expressions(keys, _) = &select.group_by else {
        return Ok(());
    };
    let is_window = |e: &ast::Expr| matches!(e, ast::Expr::Function(f) if f.name.to_string().eq_ignore_ascii_case(window::NAME));
    let Some(call) = keys.iter().find(|e| is_window(e)).cloned() else {
        return Ok(());
    };
    let field = |f: &str| -> Result<ast::Expr> {
        let text = format!("get_field({call}, '{f}')");
        Parser::new(&GenericDialect {})
            .try_with_sql(&text)
            .and_then(|mut p| p.parse_expr())
            .map_err(|e| Error::View {
                view: name.to_string(),
                msg: format!("window(): {e}"),
            })
    };
    let (start, end) = (field("start")?, field("end")?);
    let replace = |e: &mut ast::Expr| {
        let new = match e {
            ast::Expr::Identifier(i) if i.value.eq_ignore_ascii_case(window::NAME) => {
                Some(call.clone())
            }
            ast::Expr::CompoundIdentifier(parts)
                if parts.len() == 2 && parts[0].value.eq_ignore_ascii_case(window::NAME) =>
            {
                match parts[1].value.to_ascii_lowercase().as_str() {
                    "start" => Some(start.clone()),
                    "end" => Some(end.clone()),
                    _ => None,
                }
            }
            _ => None,
        };
        if let Some(new) = new {
            *e = new;
        }
    };
    for item in &mut select.projection {
        // Unnamed, the column keeps Spark's name: `window`, `start`, `end`.
        if let ast::SelectItem::UnnamedExpr(e) = item {
            let alias = match &*e {
                ast::Expr::Identifier(i) if i.value.eq_ignore_ascii_case(window::NAME) => {
                    Some(window::NAME.to_string())
                }
                ast::Expr::CompoundIdentifier(p)
                    if p.len() == 2 && p[0].value.eq_ignore_ascii_case(window::NAME) =>
                {
                    Some(p[1].value.to_ascii_lowercase())
                }
                _ => None,
            };
            if let Some(alias) = alias {
                *item = ast::SelectItem::ExprWithAlias {
                    expr: e.clone(),
                    alias: ast::Ident::new(alias),
                };
            }
        }
    }
    let _ = ast::visit_expressions_mut(&mut select.projection, |e| {
        replace(e);
        std::ops::ControlFlow::<()>::Continue(())
    });
    let _ = ast::visit_expressions_mut(&mut select.having, |e| {
        replace(e);
        std::ops::ControlFlow::<()>::Continue(())
    });
    let _ = ast::visit_expressions_mut(&mut query.order_by, |e| {
        replace(e);
        std::ops::ControlFlow::<()>::Continue(())
    });
    Ok(())
}

/// A plan node the speed layer cannot maintain, in the user's words.
fn describe(plan: &LogicalPlan) -> String {
    match plan {
        LogicalPlan::Join(_) => "a JOIN".into(),
        LogicalPlan::Window(_) => "a window function".into(),
        LogicalPlan::Distinct(_) => "SELECT DISTINCT".into(),
        LogicalPlan::Union(_) => "UNION".into(),
        LogicalPlan::Subquery(_) | LogicalPlan::SubqueryAlias(_) => "a subquery".into(),
        LogicalPlan::Aggregate(_) => "nested aggregation".into(),
        LogicalPlan::TableScan(t) => format!("reading table `{}`", t.table_name),
        LogicalPlan::Values(_) => "VALUES".into(),
        LogicalPlan::EmptyRelation(_) => "a query without FROM".into(),
        other => format!("`{}`", other.display()),
    }
}
