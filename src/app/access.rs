//! Who asks ([`Actor`]), what they ask ([`Action`]), and the one table saying who may do what
//! ([`Actor::may`]). Every use case that changes something asks it first and refuses with
//! [`Forbidden`] (the browser console answers 403), recording the refusal in the audit log.

use serde::Serialize;

use crate::store::accounts::Role;

/// Who asked for a use case: an operator at the host's terminal, or a person signed in to the
/// console, so that what changed can say by whom.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Actor {
    /// A command typed by `user` (the operating-system account, as far as it is known). The
    /// command line is root's shell on the host: it may do everything.
    CommandLine { user: String },
    /// A person signed in to the console with an account of `role`; `address` is where the
    /// request came from, when the caller knows it (for the audit log).
    Account {
        name: String,
        role: Role,
        address: Option<String>,
    },
}

impl Actor {
    /// The operator running this process, named by `$USER` or `$LOGNAME` when either is set.
    pub fn command_line() -> Actor {
        let user = ["USER", "LOGNAME"]
            .iter()
            .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
            .unwrap_or_else(|| "unknown".to_string());
        Actor::CommandLine { user }
    }

    /// The person's name: the operating-system user or the account's name. A campaign's
    /// creator and its approver are compared by it.
    pub fn name(&self) -> &str {
        match self {
            Actor::CommandLine { user } => user,
            Actor::Account { name, .. } => name,
        }
    }

    /// `command_line` or `account`, as the audit log says it.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Actor::CommandLine { .. } => "command_line",
            Actor::Account { .. } => "account",
        }
    }

    /// The role as the audit log says it: `host` for the command line.
    pub(crate) fn role_name(&self) -> &'static str {
        match self {
            Actor::CommandLine { .. } => "host",
            Actor::Account { role, .. } => role.as_str(),
        }
    }

    /// Where the request came from: `cli`, the console's client address, or `console`.
    pub(crate) fn source(&self) -> String {
        match self {
            Actor::CommandLine { .. } => "cli".to_string(),
            Actor::Account { address, .. } => {
                address.clone().unwrap_or_else(|| "console".to_string())
            }
        }
    }

    /// Whether this actor may do `action`: the permission table. The command line may do
    /// everything; an account reads, plus exactly its role's actions (no role includes
    /// another's: an administrator does not launch, an operator does not approve).
    pub fn may(&self, action: Action) -> bool {
        let role = match self {
            Actor::CommandLine { .. } => return true,
            Actor::Account { role, .. } => *role,
        };
        use Action::*;
        match action {
            Read | Login | Logout | OwnPassword => true,
            CampaignCreate | CampaignPreview | CampaignTest | CampaignLaunch | CampaignPause
            | CampaignResume | CampaignCancel | Retry | Suppress | Unsuppress | Reopen => {
                role == Role::Operator
            }
            CampaignApprove | CampaignReject => role == Role::Approver,
            AuditRead => matches!(role, Role::Approver | Role::Admin),
            Templates | TemplatesSave | TemplatesPublish | TemplatesRollback => {
                role == Role::Editor
            }
            // Another editor, or an approver: never the author (checked by the use case).
            TemplatesApprove => matches!(role, Role::Editor | Role::Approver),
            UsersAdd | UsersDisable | UsersPasswd | UsersRole | UsersAddress => role == Role::Admin,
            Host => false,
        }
    }
}

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Actor::CommandLine { user } => write!(f, "{user} (command line)"),
            Actor::Account { name, role, .. } => write!(f, "{name} ({role})"),
        }
    }
}

/// What an actor asks: the permission table's rows and the audit log's `action` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Action {
    /// Look: status, campaigns, explain, the audit log, the accounts.
    Read,
    CampaignCreate,
    /// The audience and a message rendered for a real recipient.
    CampaignPreview,
    /// A test message to the operator.
    CampaignTest,
    CampaignLaunch,
    CampaignPause,
    CampaignResume,
    CampaignCancel,
    CampaignApprove,
    CampaignReject,
    /// `retry --failed`.
    Retry,
    Suppress,
    Unsuppress,
    /// Declare the reopening.
    Reopen,
    /// The templates: the editors' tools.
    Templates,
    /// Start, restart or save a file of one's own draft template set (never live by itself).
    TemplatesSave,
    /// Approve another editor's draft set for publication (`approval.templates`).
    TemplatesApprove,
    /// Make a template set the live one, for every process.
    TemplatesPublish,
    /// Make an earlier template set the live one again.
    TemplatesRollback,
    UsersAdd,
    UsersDisable,
    UsersPasswd,
    UsersRole,
    /// Set an account's own address (where its test messages go).
    UsersAddress,
    /// The host's own work: import a snapshot, run a pass, plan, import bounces. The command
    /// line only.
    Host,
    /// The audit log in the console: it names people and their addresses, so it is for those
    /// who check others' work (approvers, administrators).
    AuditRead,
    /// Signing in to the console (any active account).
    Login,
    /// Signing out.
    Logout,
    /// Changing one's own password in the console (the old one required).
    OwnPassword,
}

impl Action {
    pub const ALL: [Action; 29] = [
        Action::Read,
        Action::CampaignCreate,
        Action::CampaignPreview,
        Action::CampaignTest,
        Action::CampaignLaunch,
        Action::CampaignPause,
        Action::CampaignResume,
        Action::CampaignCancel,
        Action::CampaignApprove,
        Action::CampaignReject,
        Action::Retry,
        Action::Suppress,
        Action::Unsuppress,
        Action::Reopen,
        Action::Templates,
        Action::TemplatesSave,
        Action::TemplatesApprove,
        Action::TemplatesPublish,
        Action::TemplatesRollback,
        Action::UsersAdd,
        Action::UsersDisable,
        Action::UsersPasswd,
        Action::UsersRole,
        Action::UsersAddress,
        Action::Host,
        Action::AuditRead,
        Action::Login,
        Action::Logout,
        Action::OwnPassword,
    ];

    /// The name in the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::CampaignCreate => "campaign.create",
            Action::CampaignPreview => "campaign.preview",
            Action::CampaignTest => "campaign.test",
            Action::CampaignLaunch => "campaign.launch",
            Action::CampaignPause => "campaign.pause",
            Action::CampaignResume => "campaign.resume",
            Action::CampaignCancel => "campaign.cancel",
            Action::CampaignApprove => "campaign.approve",
            Action::CampaignReject => "campaign.reject",
            Action::Retry => "retry",
            Action::Suppress => "suppress.add",
            Action::Unsuppress => "suppress.remove",
            Action::Reopen => "service.reopen",
            Action::Templates => "templates",
            Action::TemplatesSave => "templates.save",
            Action::TemplatesApprove => "templates.approve",
            Action::TemplatesPublish => "templates.publish",
            Action::TemplatesRollback => "templates.rollback",
            Action::UsersAdd => "users.add",
            Action::UsersDisable => "users.disable",
            Action::UsersPasswd => "users.passwd",
            Action::UsersRole => "users.role",
            Action::UsersAddress => "users.address",
            Action::Host => "host",
            Action::AuditRead => "audit.read",
            Action::Login => "session.login",
            Action::Logout => "session.logout",
            Action::OwnPassword => "account.password",
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An actor asked for what their role does not allow. Nothing was changed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{actor} may not {action}: that is not for the {role} role (see docs/console.md)")]
pub struct Forbidden {
    pub actor: String,
    pub role: String,
    pub action: Action,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(role: Role) -> Actor {
        Actor::Account {
            name: "someone".into(),
            role,
            address: None,
        }
    }

    /// The whole table, row by row: which roles may do each action.
    #[test]
    fn each_action_is_for_its_role_only() {
        use Action::*;
        let expected = |action: Action| -> &'static [Role] {
            match action {
                Read | Login | Logout | OwnPassword => &Role::ALL,
                CampaignCreate | CampaignPreview | CampaignTest | CampaignLaunch
                | CampaignPause | CampaignResume | CampaignCancel | Retry | Suppress
                | Unsuppress | Reopen => &[Role::Operator],
                CampaignApprove | CampaignReject => &[Role::Approver],
                AuditRead => &[Role::Approver, Role::Admin],
                Templates | TemplatesSave | TemplatesPublish | TemplatesRollback => &[Role::Editor],
                TemplatesApprove => &[Role::Approver, Role::Editor],
                UsersAdd | UsersDisable | UsersPasswd | UsersRole | UsersAddress => &[Role::Admin],
                Host => &[],
            }
        };
        for action in Action::ALL {
            let allowed: Vec<Role> = Role::ALL
                .into_iter()
                .filter(|r| account(*r).may(action))
                .collect();
            assert_eq!(allowed, expected(action), "{action}");
        }
    }

    #[test]
    fn the_command_line_may_do_everything_and_a_viewer_only_read() {
        let cli = Actor::CommandLine {
            user: "root".into(),
        };
        assert!(Action::ALL.into_iter().all(|a| cli.may(a)));
        let viewer = account(Role::Viewer);
        let allowed: Vec<Action> = Action::ALL.into_iter().filter(|a| viewer.may(*a)).collect();
        assert_eq!(
            allowed,
            [
                Action::Read,
                Action::Login,
                Action::Logout,
                Action::OwnPassword
            ]
        );
        // An approver cannot launch what they approve, an operator cannot approve it.
        assert!(!account(Role::Approver).may(Action::CampaignLaunch));
        assert!(!account(Role::Operator).may(Action::CampaignApprove));
        assert!(!account(Role::Admin).may(Action::CampaignLaunch));
    }
}
