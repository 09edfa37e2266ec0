// The submit form: every field of a task spec, and "Elaborate", which asks
// the server to write the spec from one line and says which path wrote it.
import { AgentType, ElaborateSource, Priority, describe, type Client, type TaskSpec, type TaskSpecInit } from "./api.js";
import { byId, h, replace } from "./dom.js";

const AGENTS = ["auto", "claude", "gemini", "codex", "local"] as const;
const PRIORITIES = ["normal", "high", "low"] as const;

function field(label: string, input: HTMLElement, hint?: string): HTMLElement {
  return h("label", { class: "field" }, h("span", {}, label), input, hint ? h("small", {}, hint) : null);
}

function list(text: string): string[] {
  return text
    .split(/[,\s]+/)
    .map((t) => t.trim())
    .filter(Boolean);
}

export class SubmitForm {
  private dialog = byId<HTMLDialogElement>("submit");
  private name = h("input", { name: "name", placeholder: "derived from the instructions when empty" });
  private instructions = h("textarea", { name: "instructions", rows: 6, required: true, placeholder: "What the agent must do, and how to tell it is done" });
  private project = h("input", { name: "project", list: "projects", placeholder: "the server's only project when empty" });
  private agent = h("select", { name: "agent" }, ...AGENTS.map((a) => h("option", { value: a }, a)));
  private model = h("input", { name: "model", placeholder: "the agent's default" });
  private budget = h("input", { name: "budget", type: "number", min: 0, step: "0.01", placeholder: "no cap" });
  private timeout = h("input", { name: "timeout", placeholder: "e.g. 30m (server default)" });
  private priority = h("select", { name: "priority" }, ...PRIORITIES.map((p) => h("option", { value: p }, p)));
  private tags = h("input", { name: "tags", placeholder: "comma separated" });
  private dependsOn = h("input", { name: "depends_on", placeholder: "task ids, comma separated" });
  private review = h("input", { name: "review", type: "checkbox" });
  private source = h("p", { class: "source", role: "status" });
  private error = h("p", { class: "error", role: "alert" });
  private elaborateButton = h("button", { type: "button", id: "elaborate" }, "Elaborate");
  private submitButton = h("button", { type: "submit", class: "primary" }, "Submit");

  constructor(
    private client: () => Client,
    private submitted: (id: string) => void,
  ) {
    this.elaborateButton.addEventListener("click", () => void this.elaborate());
    const form = h(
      "form",
      {
        method: "dialog",
        onsubmit: (event: Event) => {
          event.preventDefault();
          void this.submit();
        },
      },
      h("h2", {}, "New task"),
      field("Instructions", this.instructions, "One line is enough for Elaborate, which fills in the rest."),
      h("div", { class: "row" }, this.elaborateButton, this.source),
      h(
        "div",
        { class: "grid" },
        field("Name", this.name),
        field("Project", this.project),
        field("Agent", this.agent),
        field("Model", this.model),
        field("Budget (USD)", this.budget),
        field("Timeout", this.timeout),
        field("Priority", this.priority),
        field("Tags", this.tags),
        field("Depends on", this.dependsOn),
        h("label", { class: "field check" }, this.review, h("span", {}, "Review before it counts as done")),
      ),
      this.error,
      h(
        "div",
        { class: "row end" },
        h("button", { type: "button", onclick: () => this.dialog.close() }, "Close"),
        this.submitButton,
      ),
    );
    replace(this.dialog, form);
  }

  open(projects: string[]): void {
    const datalist = document.getElementById("projects") ?? document.body.appendChild(h("datalist", { id: "projects" }));
    replace(datalist, ...projects.map((p) => h("option", { value: p })));
    this.error.textContent = "";
    if (!this.dialog.open) {
      this.dialog.showModal();
    }
    this.instructions.focus();
  }

  private spec(): TaskSpecInit {
    const agent = this.agent.value.toUpperCase() as keyof typeof AgentType;
    return {
      name: this.name.value.trim(),
      instructions: this.instructions.value,
      project: this.project.value.trim(),
      agent: {
        type: AgentType[agent],
        model: this.model.value.trim(),
        maxBudgetUsd: Number(this.budget.value) || 0,
      },
      timeout: this.timeout.value.trim(),
      priority: Priority[this.priority.value.toUpperCase() as keyof typeof Priority],
      tags: list(this.tags.value),
      dependsOn: list(this.dependsOn.value),
      reviewRequired: this.review.checked,
    };
  }

  private fill(spec: TaskSpec): void {
    this.name.value = spec.name;
    this.instructions.value = spec.instructions;
    this.project.value = spec.project;
    this.agent.value = AgentType[spec.agent?.type || AgentType.AUTO]?.toLowerCase() ?? "auto";
    this.model.value = spec.agent?.model ?? "";
    this.budget.value = spec.agent?.maxBudgetUsd ? String(spec.agent.maxBudgetUsd) : "";
    this.timeout.value = spec.timeout;
    this.priority.value = Priority[spec.priority || Priority.NORMAL]?.toLowerCase() ?? "normal";
    this.tags.value = spec.tags.join(", ");
  }

  private async elaborate(): Promise<void> {
    const text = this.instructions.value.trim();
    if (!text) {
      this.error.textContent = "Write a line for Elaborate to start from.";
      this.instructions.focus();
      return;
    }
    this.error.textContent = "";
    this.elaborateButton.disabled = true;
    this.source.textContent = "Elaborating (it can take a while when the models are slow)…";
    try {
      const spec = this.spec();
      const answer = await this.client().raw.elaborate(
        { text, project: spec.project ?? "", agent: spec.agent?.type ?? AgentType.UNSPECIFIED },
        { timeoutMs: 600_000 },
      );
      if (answer.spec) {
        this.fill(answer.spec);
      }
      const by = (ElaborateSource[answer.source] ?? "unknown").toLowerCase().replace(/_/g, " ");
      this.source.textContent =
        `Written by ${by}${answer.model ? ` (${answer.model})` : ""}` + (answer.notes.length ? `: ${answer.notes.join("; ")}` : "");
      this.source.dataset.source = by;
    } catch (err) {
      this.source.textContent = "";
      this.error.textContent = describe(err);
    } finally {
      this.elaborateButton.disabled = false;
    }
  }

  private async submit(): Promise<void> {
    this.error.textContent = "";
    this.submitButton.disabled = true;
    try {
      const { task } = await this.client().submitTask(this.spec());
      this.dialog.close();
      this.instructions.value = "";
      this.name.value = "";
      this.source.textContent = "";
      this.submitted(task.id);
    } catch (err) {
      this.error.textContent = describe(err);
    } finally {
      this.submitButton.disabled = false;
    }
  }
}
