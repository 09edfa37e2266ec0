//! The tonic adapter for `claudomator.v1.ClaudomatorService`: each handler
//! decodes the request, makes one call into the core and encodes the answer.

use std::future::Future;

use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::convert::{
    branch_diff_to_pb, elaborate_from_pb, elaboration_to_pb, execution_to_pb, log_event_to_pb,
    pruned_to_pb, pull_to_pb, state_from_pb, submit_from_pb, system_status_to_pb, task_to_pb,
    task_with_pull_to_pb, watch_event_to_pb,
};
use crate::core::elaborate::Elaborator;
use crate::core::logs::LogKind;
use crate::core::model::AgentType;
use crate::core::pulls::Pulls;
use crate::core::review::Reviews;
use crate::core::status::StatusService;
use crate::core::validate as check;
use crate::core::watch::WatchQuery;
use crate::core::{ListQuery, TaskService};
use crate::proto as pb;
use crate::proto::claudomator_service_server::ClaudomatorService;

pub struct Api {
    tasks: TaskService,
    status: StatusService,
    elaborator: Elaborator,
    reviews: Reviews,
    /// Pull requests, when some project can open them.
    pulls: Option<Pulls>,
    /// Cancelled when the server stops: open streams end then.
    shutdown: CancellationToken,
}

impl Api {
    pub fn new(
        tasks: TaskService,
        status: StatusService,
        elaborator: Elaborator,
        reviews: Reviews,
        shutdown: CancellationToken,
    ) -> Self {
        Api {
            tasks,
            status,
            elaborator,
            reviews,
            pulls: None,
            shutdown,
        }
    }

    /// Accepting, `GetTask` and `OpenPullRequest` go through pull requests.
    pub fn with_pulls(mut self, pulls: Option<Pulls>) -> Self {
        self.pulls = pulls;
        self
    }
}

type Reply<T> = Result<Response<T>, Status>;

type LogEventStream = std::pin::Pin<
    Box<dyn tokio_stream::Stream<Item = Result<pb::StreamLogsResponse, Status>> + Send>,
>;

type WatchStream = std::pin::Pin<
    Box<dyn tokio_stream::Stream<Item = Result<pb::WatchTasksResponse, Status>> + Send>,
>;

#[tonic::async_trait]
impl ClaudomatorService for Api {
    async fn submit_task(
        &self,
        request: Request<pb::SubmitTaskRequest>,
    ) -> Reply<pb::SubmitTaskResponse> {
        let request = request.into_inner();
        let require_agent = request.require_agent;
        let request = submit_from_pb(request);
        check::check_client_submit(&request, self.tasks.rules())?;
        // The agent as validation reads it (empty: auto); a name it refuses
        // is left to validation's error.
        let agent = match request.spec.agent.agent_type.trim() {
            "" => Some(AgentType::Auto),
            name => name.parse::<AgentType>().ok(),
        };
        let agent_unavailable = match agent {
            Some(agent) => self.status.agent_unavailable(agent).await?,
            None => None,
        };
        if require_agent && let Some(why) = &agent_unavailable {
            return Err(Status::failed_precondition(format!(
                "spec.agent.type: {why}; refused (require_agent), nothing was stored"
            )));
        }
        let (task, created) = self.tasks.submit(request).await?;
        Ok(Response::new(pb::SubmitTaskResponse {
            task: Some(task_to_pb(&task)),
            created,
            agent_unavailable: agent_unavailable.unwrap_or_default(),
        }))
    }

    async fn get_task(&self, request: Request<pb::GetTaskRequest>) -> Reply<pb::GetTaskResponse> {
        let (task, pull) = self.tasks.get_with_pull(&request.into_inner().id).await?;
        Ok(Response::new(pb::GetTaskResponse {
            task: Some(task_with_pull_to_pb(&task, pull.as_ref())),
        }))
    }

    async fn list_tasks(
        &self,
        request: Request<pb::ListTasksRequest>,
    ) -> Reply<pb::ListTasksResponse> {
        let req = request.into_inner();
        check::check_list_query(req.states.len(), &req.project, &req.tag, req.page_size)?;
        let states = req
            .states
            .iter()
            .map(|s| state_from_pb(*s))
            .collect::<Result<_, _>>()?;
        let page = self
            .tasks
            .list(ListQuery {
                states,
                project: req.project,
                tag: req.tag,
                page_size: req.page_size,
                page_token: req.page_token,
            })
            .await?;
        let pulls = self.tasks.pulls_of(&page.items).await?;
        Ok(Response::new(pb::ListTasksResponse {
            tasks: page
                .items
                .iter()
                .map(|t| task_with_pull_to_pb(t, pulls.iter().find(|p| p.task_id == t.id)))
                .collect(),
            next_page_token: page.next.map(|id| id.to_string()).unwrap_or_default(),
        }))
    }

    async fn cancel_task(
        &self,
        request: Request<pb::CancelTaskRequest>,
    ) -> Reply<pb::CancelTaskResponse> {
        let req = request.into_inner();
        let task = self.tasks.cancel(&req.id, &req.reason).await?;
        Ok(Response::new(pb::CancelTaskResponse {
            task: Some(task_to_pb(&task)),
        }))
    }

    async fn get_execution(
        &self,
        request: Request<pb::GetExecutionRequest>,
    ) -> Reply<pb::GetExecutionResponse> {
        let execution = self.tasks.get_execution(&request.into_inner().id).await?;
        Ok(Response::new(pb::GetExecutionResponse {
            execution: Some(execution_to_pb(&execution)),
        }))
    }

    async fn answer_question(
        &self,
        request: Request<pb::AnswerQuestionRequest>,
    ) -> Reply<pb::AnswerQuestionResponse> {
        let req = request.into_inner();
        let task = self.tasks.answer(&req.task_id, &req.answer).await?;
        Ok(Response::new(pb::AnswerQuestionResponse {
            task: Some(task_to_pb(&task)),
        }))
    }

    async fn accept_task(
        &self,
        request: Request<pb::AcceptTaskRequest>,
    ) -> Reply<pb::AcceptTaskResponse> {
        let task_id = request.into_inner().task_id;
        let task = match &self.pulls {
            Some(pulls) => pulls.accept(&task_id).await?,
            None => self.tasks.accept(&task_id).await?,
        };
        Ok(Response::new(pb::AcceptTaskResponse {
            task: Some(task_to_pb(&task)),
        }))
    }

    async fn reject_task(
        &self,
        request: Request<pb::RejectTaskRequest>,
    ) -> Reply<pb::RejectTaskResponse> {
        let req = request.into_inner();
        let task = self.tasks.reject(&req.task_id, &req.feedback).await?;
        Ok(Response::new(pb::RejectTaskResponse {
            task: Some(task_to_pb(&task)),
        }))
    }

    async fn open_pull_request(
        &self,
        request: Request<pb::OpenPullRequestRequest>,
    ) -> Reply<pb::OpenPullRequestResponse> {
        let task_id = request.into_inner().task_id;
        let Some(pulls) = &self.pulls else {
            return Err(crate::core::CoreError::FailedPrecondition(
                "no project of this server can open pull requests (a project needs `github` \
                 and GitHub credentials)"
                    .into(),
            )
            .into());
        };
        let (record, opened) = pulls.open(&task_id).await?;
        Ok(Response::new(pb::OpenPullRequestResponse {
            pull_request: Some(pull_to_pb(&record)),
            opened,
        }))
    }

    async fn get_task_diff(
        &self,
        request: Request<pb::GetTaskDiffRequest>,
    ) -> Reply<pb::GetTaskDiffResponse> {
        let req = request.into_inner();
        check::check_context_lines(req.context_lines)?;
        let diff = self.reviews.diff(&req.task_id, req.context_lines).await?;
        Ok(Response::new(branch_diff_to_pb(diff)))
    }

    async fn merge_task(
        &self,
        request: Request<pb::MergeTaskRequest>,
    ) -> Reply<pb::MergeTaskResponse> {
        let req = request.into_inner();
        check::check_branch_name("into", &req.into)?;
        let merged = self
            .reviews
            .merge(&req.task_id, req.into.trim(), req.rebase)
            .await?;
        Ok(Response::new(pb::MergeTaskResponse {
            branch: format!("{}{}", crate::sandbox::BRANCH_PREFIX, req.task_id),
            into: merged.into,
            old_commit: merged.old_commit,
            new_commit: merged.new_commit,
            checked_out: merged.checked_out,
        }))
    }

    async fn prune_tasks(
        &self,
        request: Request<pb::PruneTasksRequest>,
    ) -> Reply<pb::PruneTasksResponse> {
        let req = request.into_inner();
        let items = self.reviews.prune(req.dry_run, req.force).await?;
        Ok(Response::new(pb::PruneTasksResponse {
            items: items.into_iter().map(pruned_to_pb).collect(),
        }))
    }

    async fn get_system_status(
        &self,
        _request: Request<pb::GetSystemStatusRequest>,
    ) -> Reply<pb::GetSystemStatusResponse> {
        let status = self.status.status().await?;
        Ok(Response::new(system_status_to_pb(&status)))
    }

    async fn elaborate(
        &self,
        request: Request<pb::ElaborateRequest>,
    ) -> Reply<pb::ElaborateResponse> {
        let request = elaborate_from_pb(request.into_inner());
        check::check_elaborate(&request)?;
        let elaboration = self.elaborator.elaborate(request).await?;
        Ok(Response::new(elaboration_to_pb(&elaboration)))
    }

    type StreamLogsStream = LogEventStream;

    type WatchTasksStream = WatchStream;

    async fn watch_tasks(
        &self,
        request: Request<pb::WatchTasksRequest>,
    ) -> Reply<Self::WatchTasksStream> {
        let req = request.into_inner();
        check::check_list_query(req.states.len(), &req.project, &req.tag, 0)?;
        check::check_text("cursor", &req.cursor, 32)?;
        let states = req
            .states
            .iter()
            .map(|s| state_from_pb(*s))
            .collect::<Result<_, _>>()?;
        let events = self
            .tasks
            .watch(WatchQuery {
                project: req.project,
                tag: req.tag,
                states,
                task_ids: req.task_ids,
                changes_only: req.changes_only,
                cursor: req.cursor,
            })
            .await?;
        let events = tokio_stream::wrappers::ReceiverStream::new(events);
        let responses = tokio_stream::StreamExt::map(events, |item| match item {
            Ok(event) => Ok(watch_event_to_pb(&event)),
            Err(e) => Err(e.into()),
        });
        Ok(Response::new(Box::pin(UntilShutdown::new(
            responses,
            &self.shutdown,
        ))))
    }

    async fn stream_logs(
        &self,
        request: Request<pb::StreamLogsRequest>,
    ) -> Reply<Self::StreamLogsStream> {
        let req = request.into_inner();
        let events = self
            .tasks
            .stream_logs(&req.execution_id, &req.task_id, req.from_offset, req.follow)
            .await?;
        let events = tokio_stream::wrappers::ReceiverStream::new(events);
        let include_debug = req.include_debug;
        let responses = tokio_stream::StreamExt::filter_map(events, move |item| match item {
            Ok(item) if item.event.kind == LogKind::Debug && !include_debug => None,
            Ok(item) => Some(Ok(pb::StreamLogsResponse {
                event: Some(log_event_to_pb(&item.execution_id.to_string(), &item.event)),
            })),
            Err(e) => Some(Err(e.into())),
        });
        Ok(Response::new(Box::pin(UntilShutdown::new(
            responses,
            &self.shutdown,
        ))))
    }

    async fn list_executions(
        &self,
        request: Request<pb::ListExecutionsRequest>,
    ) -> Reply<pb::ListExecutionsResponse> {
        let req = request.into_inner();
        check::check_page_size(req.page_size)?;
        let page = self
            .tasks
            .list_executions(&req.task_id, req.page_size, &req.page_token)
            .await?;
        Ok(Response::new(pb::ListExecutionsResponse {
            executions: page.items.iter().map(execution_to_pb).collect(),
            next_page_token: page.next.map(|id| id.to_string()).unwrap_or_default(),
        }))
    }
}

/// A server stream that ends (cleanly, status OK) when the server stops, so
/// a client following it (a board left open, `logs -f`) never holds up the
/// shutdown; the client reconnects and resumes from its cursor or offset.
struct UntilShutdown<S> {
    inner: S,
    stopped: std::pin::Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
}

impl<S> UntilShutdown<S> {
    fn new(inner: S, shutdown: &CancellationToken) -> Self {
        UntilShutdown {
            inner,
            stopped: Box::pin(shutdown.clone().cancelled_owned()),
        }
    }
}

impl<S: tokio_stream::Stream + Unpin> tokio_stream::Stream for UntilShutdown<S> {
    type Item = S::Item;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<S::Item>> {
        if self.stopped.as_mut().poll(cx).is_ready() {
            return std::task::Poll::Ready(None);
        }
        std::pin::Pin::new(&mut self.inner).poll_next(cx)
    }
}
