//! The agent's configuration: where the hub is, how many tasks at once, and
//! the runner profiles it offers.

use anyhow::{Context, bail};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How the prompt reaches the runner's process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptMode {
    /// Written to standard input, which is then closed.
    Stdin,
    /// Substituted for `{prompt}` in the argv.
    Arg,
    /// Written to a private file whose path replaces `{prompt_file}` in the argv.
    File,
}

/// How a runner's standard output is read, beyond being kept as output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// Claude Code's `--output-format stream-json --verbose`.
    Claude,
    /// Codex's `exec --json`.
    Codex,
}

/// Tools the built-in Claude Code runner may use without asking. Claude Code
/// refuses `--dangerously-skip-permissions` as root; a list works for everyone.
pub const CLAUDE_TOOLS: &str = "Bash,Edit,MultiEdit,Write,Read,Glob,Grep,LS,NotebookEdit,TodoWrite,mcp__muster__note,mcp__muster__lock,mcp__muster__unlock,mcp__muster__ask,mcp__muster__read_messages";

/// A runner profile: how to start one kind of agent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunnerProfile {
    /// Program and arguments. No shell is involved unless argv names one.
    pub argv: Vec<String>,
    #[serde(default = "default_prompt_mode")]
    pub prompt: PromptMode,
    /// Names of environment variables passed from the agent's environment to
    /// the run; nothing else is passed. The agent's own token never is.
    #[serde(default)]
    pub env: Vec<String>,
    /// Working directory; defaults to the agent's `workdir`.
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// Read standard output as this agent's event stream: steps, tokens,
    /// cost and the agent's own verdict are recorded.
    #[serde(default)]
    pub format: Option<Format>,
    /// A run with no output for this long is `quiet` (overrides the agent's `quiet_after`).
    #[serde(default)]
    pub quiet_after: Option<String>,
    /// A run with no output for this long is `wedged`: it is killed and the
    /// attempt fails (overrides the agent's `wedged_after`).
    #[serde(default)]
    pub wedged_after: Option<String>,
    /// US dollars per million tokens, to estimate a run's cost as it goes
    /// (for a task's `max_cost_usd`); known models are estimated without it.
    #[serde(default)]
    pub prices: Option<crate::stream::Prices>,
    /// For a runner whose output is not an agent's stream: a regular
    /// expression whose last match in standard output (its first group, if
    /// it has one) is the run's summary.
    #[serde(default)]
    pub summary_pattern: Option<String>,
    /// Or: a JSON pointer (`/result/summary`) into the last line of standard
    /// output that is a JSON value.
    #[serde(default)]
    pub summary_json: Option<String>,
}

/// When a run with no output counts as quiet, and as wedged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    pub quiet: Duration,
    pub wedged: Duration,
}

impl Default for Liveness {
    fn default() -> Liveness {
        Liveness { quiet: Duration::from_secs(60), wedged: Duration::from_secs(15 * 60) }
    }
}

impl Liveness {
    /// `quiet` and `wedged` as given (each optional) over `self`.
    pub fn with(self, quiet: Option<&str>, wedged: Option<&str>) -> anyhow::Result<Liveness> {
        let parse = |key: &'static str, v: Option<&str>, default: Duration| match v {
            Some(v) => muster_proto::parse_duration(key, v).map_err(|e| anyhow::anyhow!("{e}")),
            None => Ok(default),
        };
        let l = Liveness {
            quiet: parse("quiet_after", quiet, self.quiet)?,
            wedged: parse("wedged_after", wedged, self.wedged)?,
        };
        if l.quiet.is_zero() || l.wedged <= l.quiet {
            bail!(
                "quiet_after ({}) must be more than 0 and wedged_after ({}) longer than it",
                muster_proto::setting_duration(l.quiet),
                muster_proto::setting_duration(l.wedged)
            );
        }
        Ok(l)
    }
}

fn default_prompt_mode() -> PromptMode {
    PromptMode::Stdin
}

/// Variables every run gets when the agent has them.
pub const BASE_ENV: &[&str] = &["PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TERM", "TMPDIR", "TZ"];

impl RunnerProfile {
    pub fn builtin(name: &str) -> Option<RunnerProfile> {
        let argv = |a: &[&str]| a.iter().map(|s| s.to_string()).collect();
        let env = |a: &[&str]| a.iter().map(|s| s.to_string()).collect();
        match name {
            "claude" => Some(RunnerProfile {
                argv: argv(&[
                    "claude",
                    "-p",
                    "--output-format",
                    "stream-json",
                    "--verbose",
                    "--allowedTools",
                    CLAUDE_TOOLS,
                    // Muster's own tools (locks, decisions, messages), and a
                    // person's answer for any tool not allowed above.
                    "--mcp-config",
                    "{mcp_config}",
                    "--permission-prompt-tool",
                    "mcp__muster__permission_prompt",
                ]),
                prompt: PromptMode::Stdin,
                env: env(&[
                    "ANTHROPIC_API_KEY",
                    "ANTHROPIC_BASE_URL",
                    "ANTHROPIC_AUTH_TOKEN",
                    "ANTHROPIC_MODEL",
                    "CLAUDE_CONFIG_DIR",
                    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC",
                    // How patient Claude Code is with a failing model API.
                    "CLAUDE_CODE_MAX_RETRIES",
                    "API_TIMEOUT_MS",
                ]),
                cwd: None,
                format: Some(Format::Claude),
                quiet_after: None,
                wedged_after: None,
                prices: None,
                summary_pattern: None,
                summary_json: None,
            }),
            // The run's directory is its sandbox's writable root; outside a git
            // repository Codex would refuse to start without the skip flag.
            "codex" => Some(RunnerProfile {
                argv: argv(&["codex", "exec", "--json", "--sandbox", "workspace-write", "--skip-git-repo-check"]),
                prompt: PromptMode::Stdin,
                env: env(&["OPENAI_API_KEY", "OPENAI_BASE_URL", "CODEX_HOME"]),
                cwd: None,
                format: Some(Format::Codex),
                quiet_after: None,
                wedged_after: None,
                prices: None,
                summary_pattern: None,
                summary_json: None,
            }),
            // The prompt is a bash script, read from a file so that commands
            // in it that read standard input do not swallow the script.
            "shell" => Some(RunnerProfile {
                argv: argv(&["bash", "{prompt_file}"]),
                prompt: PromptMode::File,
                env: Vec::new(),
                cwd: None,
                format: None,
                quiet_after: None,
                wedged_after: None,
                prices: None,
                summary_pattern: None,
                summary_json: None,
            }),
            _ => None,
        }
    }

    fn check(&self, name: &str) -> anyhow::Result<()> {
        if self.argv.is_empty() || self.argv[0].is_empty() {
            bail!("runner {name:?}: argv must name a program");
        }
        if let Some(p) = &self.summary_pattern {
            regex::Regex::new(p).map_err(|e| anyhow::anyhow!("runner {name:?}: summary_pattern: {e}"))?;
        }
        if let Some(p) = &self.summary_json
            && !(p.is_empty() || p.starts_with('/'))
        {
            bail!("runner {name:?}: summary_json must be a JSON pointer such as \"/summary\", got {p:?}");
        }
        if (self.summary_pattern.is_some() || self.summary_json.is_some()) && self.format.is_some() {
            bail!("runner {name:?}: summary_pattern and summary_json are for runners without a format");
        }
        let mentions = |needle: &str| self.argv.iter().any(|a| a.contains(needle));
        match self.prompt {
            PromptMode::Arg if !mentions("{prompt}") => {
                bail!("runner {name:?}: prompt = \"arg\" needs {{prompt}} in argv")
            }
            PromptMode::File if !mentions("{prompt_file}") => {
                bail!("runner {name:?}: prompt = \"file\" needs {{prompt_file}} in argv")
            }
            _ => Ok(()),
        }
    }
}

/// `--config FILE`, all optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentFile {
    pub hub: Option<String>,
    pub slots: Option<u32>,
    #[serde(default)]
    pub capabilities: Vec<String>,
    pub workdir: Option<PathBuf>,
    /// Built-in runners to enable by name (`claude`, `codex`, `shell`).
    #[serde(default)]
    pub enable: Vec<String>,
    #[serde(default)]
    pub runners: BTreeMap<String, RunnerProfile>,
    /// Grace between SIGTERM and SIGKILL when a run is stopped, e.g. "10s".
    pub kill_grace: Option<String>,
    /// Repository names tasks may give (`--repo NAME`), mapped to paths.
    #[serde(default)]
    pub repos: BTreeMap<String, PathBuf>,
    /// Channels whose posts the agent wants as they happen (logged as they arrive).
    #[serde(default)]
    pub channels: Vec<String>,
    /// Where a task's repository path (`--repo team/web`) is looked up;
    /// defaults to `workdir`. A path never leads outside it.
    pub repos_root: Option<PathBuf>,
    /// No output for this long makes a run `quiet` (default 1m).
    pub quiet_after: Option<String>,
    /// No output for this long makes a run `wedged`: killed and failed (default 15m).
    pub wedged_after: Option<String>,
}

impl AgentFile {
    pub fn load(path: &Path) -> anyhow::Result<AgentFile> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("{} is not a valid agent config", path.display()))
    }
}

/// Everything the agent needs to run, resolved.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub hub: String,
    pub token: String,
    pub slots: u32,
    pub capabilities: Vec<String>,
    pub runners: BTreeMap<String, RunnerProfile>,
    pub workdir: PathBuf,
    pub kill_grace: Duration,
    /// Output forwarded per run; the rest is counted and dropped.
    pub max_output_bytes: u64,
    /// How long a shutdown waits for runs to finish before stopping them.
    pub drain_timeout: Duration,
    /// Reconnect delays: start, then doubling up to max, with jitter.
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// Repository names mapped to paths, for tasks that run in a worktree.
    pub repos: BTreeMap<String, PathBuf>,
    /// Where task-given repository paths are resolved; `workdir` when unset.
    pub repos_root: Option<PathBuf>,
    /// The agent's quiet and wedged limits; a runner may override them.
    pub liveness: Liveness,
    /// Channels it follows: their posts are sent to it as they happen.
    pub channels: Vec<String>,
    /// A certificate authority (PEM) to trust for `wss://` beside the system's.
    pub ca: Option<PathBuf>,
}

impl AgentConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.slots == 0 || self.slots > 1024 {
            bail!("slots must be between 1 and 1024, got {}", self.slots);
        }
        if self.runners.is_empty() {
            bail!(
                "this agent offers no runners: neither claude nor codex is on PATH (install Claude Code with \
                 `npm install -g @anthropic-ai/claude-code`, or Codex with `npm install -g @openai/codex`), \
                 or enable the shell runner with `--runner shell`, or define runners in the config file"
            );
        }
        for (name, profile) in &self.runners {
            muster_core::RunnerName::parse(name).map_err(|e| anyhow::anyhow!("runner name: {e}"))?;
            profile.check(name)?;
            self.liveness_of(profile).map_err(|e| anyhow::anyhow!("runner {name:?}: {e}"))?;
        }
        if !self.workdir.is_dir() {
            bail!("workdir {} is not an existing directory", self.workdir.display());
        }
        for (name, profile) in &self.runners {
            if let Some(cwd) = &profile.cwd
                && !cwd.is_dir()
            {
                bail!("runner {name:?}: cwd {} is not an existing directory", cwd.display());
            }
        }
        for cap in &self.capabilities {
            muster_core::Capability::parse(cap).map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        for (name, path) in &self.repos {
            if name.is_empty() || name.chars().any(char::is_control) {
                bail!("repos: {name:?} is not a usable repository name");
            }
            if !path.is_dir() {
                bail!("repos: {name:?} maps to {}, which is not an existing directory", path.display());
            }
        }
        if let Some(root) = &self.repos_root
            && !root.is_dir()
        {
            bail!("repos_root {} is not an existing directory", root.display());
        }
        Ok(())
    }

    /// The quiet and wedged limits for runs of `profile`.
    pub fn liveness_of(&self, profile: &RunnerProfile) -> anyhow::Result<Liveness> {
        self.liveness.with(profile.quiet_after.as_deref(), profile.wedged_after.as_deref())
    }

    /// Where this agent finds repositories and makes worktrees.
    pub fn places(&self) -> crate::workspace::Places {
        crate::workspace::Places {
            repos: self.repos.clone(),
            repos_root: self.repos_root.clone().unwrap_or_else(|| self.workdir.clone()),
            worktrees: self.workdir.join("worktrees"),
        }
    }
}

/// Whether `program` can be found on PATH (or is a path that exists).
pub fn on_path(program: &str) -> bool {
    if program.contains('/') {
        return Path::new(program).is_file();
    }
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}
