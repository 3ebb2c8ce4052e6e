//! Each query's share of the SQL memory: [`bound`] wraps a query's plan so that its operators
//! draw from a pool of their own ([`QueryPool`]), which draws from the shared one. A query
//! past its share fails with SQLSTATE `53200` (an operator that can spill — a sort, an
//! aggregate — spills first), and one query can no longer take all the memory that every
//! other connection's queries share.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::memory_pool::{
    MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};

/// One query's pool: every reservation also draws from `shared`, and together they may not
/// pass `limit`.
#[derive(Debug)]
pub struct QueryPool {
    shared: Arc<dyn MemoryPool>,
    limit: usize,
    used: AtomicUsize,
}

impl QueryPool {
    /// A pool of at most `limit` bytes, drawn from `shared`.
    pub fn new(shared: Arc<dyn MemoryPool>, limit: usize) -> Self {
        QueryPool {
            shared,
            limit,
            used: AtomicUsize::new(0),
        }
    }
}

impl fmt::Display for QueryPool {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "a query's pool: {} of {} bytes, drawn from {}",
            self.reserved(),
            self.limit,
            self.shared
        )
    }
}

impl MemoryPool for QueryPool {
    fn name(&self) -> &str {
        "lambdaflow query"
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.shared.register(consumer)
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.shared.unregister(consumer)
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.used.fetch_add(additional, Ordering::Relaxed);
        self.shared.grow(reservation, additional)
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.used.fetch_sub(shrink, Ordering::Relaxed);
        self.shared.shrink(reservation, shrink)
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        let before = self.used.fetch_add(additional, Ordering::Relaxed);
        if before + additional > self.limit {
            self.used.fetch_sub(additional, Ordering::Relaxed);
            return Err(DataFusionError::ResourcesExhausted(format!(
                "the query needs more than its {} MiB of memory ({} asked {additional} bytes more, \
                 with {before} held by the query)",
                self.limit >> 20,
                reservation.consumer().name()
            )));
        }
        if let Err(e) = self.shared.try_grow(reservation, additional) {
            self.used.fetch_sub(additional, Ordering::Relaxed);
            return Err(e);
        }
        Ok(())
    }

    fn reserved(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn memory_limit(&self) -> MemoryLimit {
        MemoryLimit::Finite(self.limit)
    }
}

/// `plan` with its operators' memory bounded by `limit` bytes, as one query.
pub fn bound(plan: Arc<dyn ExecutionPlan>, limit: usize) -> Arc<dyn ExecutionPlan> {
    Arc::new(QueryMemory {
        inner: plan,
        limit,
        runtime: OnceLock::new(),
    })
}

/// The root of a query's plan: runs it with a [`QueryPool`] of its own, one for all its
/// partitions.
#[derive(Debug)]
struct QueryMemory {
    inner: Arc<dyn ExecutionPlan>,
    limit: usize,
    /// The runtime of the query's pool, made at its first partition's start.
    runtime: OnceLock<Arc<RuntimeEnv>>,
}

impl DisplayAs for QueryMemory {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "QueryMemory: limit={} MiB", self.limit >> 20)
    }
}

impl ExecutionPlan for QueryMemory {
    fn name(&self) -> &'static str {
        "QueryMemory"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.inner.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.inner]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match children.pop() {
            Some(inner) if children.is_empty() => Ok(bound(inner, self.limit)),
            _ => Err(DataFusionError::Internal(
                "QueryMemory has exactly one child".into(),
            )),
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let runtime = match self.runtime.get() {
            Some(r) => Arc::clone(r),
            None => {
                let env = context.runtime_env();
                let pool = QueryPool::new(Arc::clone(&env.memory_pool), self.limit);
                let r = RuntimeEnvBuilder::from_runtime_env(&env)
                    .with_memory_pool(Arc::new(pool))
                    .build_arc()?;
                Arc::clone(self.runtime.get_or_init(|| r))
            }
        };
        let ctx = TaskContext::new(
            context.task_id(),
            context.session_id(),
            context.session_config().clone(),
            context.scalar_functions().clone(),
            context.higher_order_functions().clone(),
            context.aggregate_functions().clone(),
            context.window_functions().clone(),
            runtime,
        );
        self.inner.execute(partition, Arc::new(ctx))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
    use datafusion::common::DataFusionError;
    use datafusion::datasource::MemTable;
    use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
    use datafusion::execution::memory_pool::{GreedyMemoryPool, MemoryConsumer, MemoryPool};
    use datafusion::execution::runtime_env::RuntimeEnvBuilder;
    use datafusion::physical_plan::collect;
    use datafusion::prelude::{SessionConfig, SessionContext};

    use super::{QueryPool, bound};

    #[test]
    fn a_querys_reservations_draw_from_the_shared_pool_up_to_its_share() {
        let shared: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(64 << 20));
        let pool: Arc<dyn MemoryPool> = Arc::new(QueryPool::new(Arc::clone(&shared), 1 << 20));
        let a = MemoryConsumer::new("sort").register(&pool);
        let b = MemoryConsumer::new("join").register(&pool);
        a.try_grow(600 << 10).unwrap();
        assert_eq!(shared.reserved(), 600 << 10);
        let err = b.try_grow(600 << 10).unwrap_err();
        assert!(
            err.to_string().contains(
                "the query needs more than its 1 MiB of memory (join asked 614400 bytes more"
            ),
            "{err}"
        );
        assert_eq!(shared.reserved(), 600 << 10, "a refusal takes nothing");
        b.try_grow(400 << 10).unwrap();
        a.shrink(100 << 10);
        assert_eq!((pool.reserved(), shared.reserved()), (900 << 10, 900 << 10));
        drop((a, b));
        assert_eq!((pool.reserved(), shared.reserved()), (0, 0));
    }

    /// A sort that cannot spill (no disk) over 300,000 rows (about 10 MB), its plan bound as
    /// one query: within a 1 MiB share it fails, though the shared pool would have held it;
    /// within 48 MiB it is answered; either way the query gives back all it held.
    #[tokio::test]
    async fn a_plans_operators_draw_from_its_share() {
        let shared: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(64 << 20));
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::clone(&shared))
            .with_disk_manager_builder(
                DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
            )
            .build_arc()
            .unwrap();
        let ctx = SessionContext::new_with_config_rt(
            SessionConfig::new().with_target_partitions(2),
            runtime,
        );
        // Batches of their own (a slice of one large batch is counted at the whole batch's
        // size by every operator that holds it).
        let n = 300_000i64;
        let batches: Vec<RecordBatch> = (0..n)
            .step_by(8192)
            .map(|from| {
                let to = (from + 8192).min(n);
                RecordBatch::try_from_iter([
                    (
                        "s",
                        Arc::new(StringArray::from_iter_values(
                            (from..to).map(|i| format!("customer-{:08}", (i * 7919) % n)),
                        )) as _,
                    ),
                    ("v", Arc::new(Int64Array::from_iter_values(from..to)) as _),
                ])
                .unwrap()
            })
            .collect();
        let table = MemTable::try_new(batches[0].schema(), vec![batches]).unwrap();
        ctx.register_table("t", Arc::new(table)).unwrap();
        let plan = ctx
            .sql("SELECT s, v FROM t ORDER BY s")
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();

        let err = collect(bound(Arc::clone(&plan), 1 << 20), ctx.task_ctx())
            .await
            .unwrap_err();
        assert!(
            matches!(err.find_root(), DataFusionError::ResourcesExhausted(_)),
            "{err}"
        );
        assert_eq!(shared.reserved(), 0);

        let rows: usize = collect(bound(plan, 48 << 20), ctx.task_ctx())
            .await
            .unwrap()
            .iter()
            .map(RecordBatch::num_rows)
            .sum();
        assert_eq!(rows, n as usize);
        assert_eq!(shared.reserved(), 0);
    }
}
