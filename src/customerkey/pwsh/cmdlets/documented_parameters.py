"""Microsoft's documented parameters of every cmdlet this shell implements, as data.

Admins paste lines from Microsoft's documentation; those lines carry parameters that mean
something in Exchange Online, Azure or SharePoint Online and nothing here. For each cmdlet
this table names the documentation page it was checked against and sorts the documented
parameters the cmdlet does not implement itself:

- ``ignored``: accepted, then dropped with ``WARNING: -X has no effect here; ignored.``
  (``-DomainController``, ``-DefaultProfile``, credentials of a sign-in that is local here...);
- ``refused``: accepted by the parser, then the command stops before it runs with the reason,
  because dropping them would change the result (a filter, a cross-forest move, a Managed
  HSM...). Each reason is followed by the names it covers;
- ``own``: parameters of ours Microsoft does not document (``-Tenant`` and the like).

Everything else the cmdlet declares is a documented parameter it implements. A parameter
Microsoft does not document fails as PowerShell fails it ("A parameter cannot be found...").
``-WhatIf``/``-Confirm`` follow ``should_process``: where Microsoft documents them the cmdlet
takes them (-WhatIf does nothing but say what it would do). The common parameters are in
``customerkey.pwsh.language.binding``.

A token is ``Name``, ``Name|Alias|Alias`` or either with ``:switch`` for a switch; any other
parameter takes one value of any type, which is what the documentation passes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from customerkey.pwsh.language.binding import Param

EXO_DOCS = "https://learn.microsoft.com/powershell/module/exchangepowershell/"
AZ_DOCS = "https://learn.microsoft.com/powershell/module/az.keyvault/"
ACCOUNTS_DOCS = "https://learn.microsoft.com/powershell/module/az.accounts/"
SPO_DOCS = "https://learn.microsoft.com/powershell/module/sharepoint-online/"
PS_UTILITY = "https://learn.microsoft.com/powershell/module/microsoft.powershell.utility/"
PS_CORE = "https://learn.microsoft.com/powershell/module/microsoft.powershell.core/"

PROFILE = "DefaultProfile|AzContext|AzureRmContext|AzureCredential"
MANAGED_HSM = (
    "Managed HSM pools are not part of customerkey; name the vault with -VaultName instead."
)
PIPELINE_OBJECT = (
    "objects are not bound from -InputObject or -ResourceId here; name the vault (and key) "
    "with -VaultName and -Name instead."
)
FILTERS = (
    "it narrows what the cmdlet returns and this shell cannot apply it, so the answer would "
    "be wrong; leave it out and pick from the full list."
)


@dataclass(frozen=True)
class Documented:
    """What Microsoft documents for one cmdlet, beyond what the cmdlet implements."""

    url: str
    ignored: str = ""
    refused: dict[str, str] = field(default_factory=dict)  # reason -> tokens
    own: str = ""
    should_process: bool = False

    def ignored_params(self) -> tuple[Param, ...]:
        return tuple(_param(token, ignored=True) for token in self.ignored.split())

    def refused_params(self) -> tuple[Param, ...]:
        return tuple(
            _param(token, refused=reason)
            for reason, tokens in self.refused.items()
            for token in tokens.split()
        )

    def own_names(self) -> frozenset[str]:
        return frozenset(self.own.split())


def _param(token: str, *, ignored: bool = False, refused: str = "") -> Param:
    names, _, kind = token.partition(":")
    name, *aliases = names.split("|")
    return Param(
        name,
        "switch" if kind == "switch" else "object",
        aliases=tuple(aliases),
        ignored=ignored,
        refused=refused,
    )


DOCUMENTED: dict[str, Documented] = {
    # ------------------------------------------------------------------ sign-in
    "Connect-AzAccount": Documented(
        ACCOUNTS_DOCS + "connect-azaccount",
        ignored=f"AccessToken AuthScope|AuthScopeTypeName CertificatePassword CertificatePath "
        f"CertificateThumbprint ClaimsChallenge ContextName Credential {PROFILE} "
        "Environment|EnvironmentName FederatedToken|ClientAssertion Force:switch "
        "GraphAccessToken Identity|MSI|ManagedService:switch KeyVaultAccessToken "
        "MaxContextPopulation MicrosoftGraphAccessToken Scope SendCertificateChain:switch "
        "SkipContextPopulation:switch SkipValidation:switch "
        "UseDeviceAuthentication|DeviceCode|DeviceAuth|Device:switch",
        should_process=True,
    ),
    "Disconnect-AzAccount": Documented(
        ACCOUNTS_DOCS + "disconnect-azaccount",
        ignored=f"ApplicationId|SPN|ServicePrincipal AzureContext ContextName {PROFILE} "
        "InputObject Scope TenantId Username|Id|UserId",
        should_process=True,
    ),
    "Connect-ExchangeOnline": Documented(
        EXO_DOCS + "connect-exchangeonline",
        ignored="ConnectionUri AzureADAuthorizationEndpointUri ExchangeEnvironmentName "
        "PSSessionOption CommandName FormatTypeName AccessToken AppId "
        "BypassMailboxAnchoring:switch Certificate CertificateFilePath CertificatePassword "
        "CertificateThumbprint Credential Device:switch DisableWAM:switch "
        "EnableErrorReporting:switch EXOModuleBasePath InlineCredential:switch "
        "LoadCmdletHelp:switch LogDirectoryPath LogLevel ManagedIdentity:switch "
        "ManagedIdentityAccountId Organization PageSize ShowProgress SigningCertificate "
        "SkipLoadingCmdletHelp:switch SkipLoadingFormatData:switch TrackPerformance "
        "UseMultithreading UseRPSSession:switch",
        refused={
            "the cmdlets keep their names here (no prefix) and act in the tenant of "
            "-UserPrincipalName; there is no delegated (partner) administration.": (
                "DelegatedOrganization Prefix"
            ),
        },
    ),
    "Disconnect-ExchangeOnline": Documented(
        EXO_DOCS + "disconnect-exchangeonline",
        ignored="ConnectionId ModulePrefix",
        should_process=True,
    ),
    "Connect-SPOService": Documented(
        SPO_DOCS + "connect-sposervice",
        ignored="AuthenticationUrl ClientTag ModernAuth Region",
    ),
    "Disconnect-SPOService": Documented(SPO_DOCS + "disconnect-sposervice"),
    # ------------------------------------------------------------------ vaults
    "New-AzKeyVault": Documented(
        AZ_DOCS + "new-azkeyvault",
        ignored=f"{PROFILE} DisableRbacAuthorization:switch EnabledForDeployment:switch "
        "EnabledForDiskEncryption:switch EnabledForTemplateDeployment:switch NetworkRuleSet "
        "PublicNetworkAccess Sku Tag|Tags",
        own="EnableSoftDelete Tenant",
        should_process=True,
    ),
    "Get-AzKeyVault": Documented(
        AZ_DOCS + "get-azkeyvault",
        ignored=f"{PROFILE} SubscriptionId",
        refused={"vaults carry no tags here to filter on; leave -Tag out.": "Tag"},
    ),
    "Remove-AzKeyVault": Documented(
        AZ_DOCS + "remove-azkeyvault",
        ignored=f"AsJob:switch {PROFILE} SubscriptionId",
        refused={PIPELINE_OBJECT: "InputObject ResourceId"},
        should_process=True,
    ),
    "Undo-AzKeyVaultRemoval": Documented(
        AZ_DOCS + "undo-azkeyvaultremoval",
        ignored=f"{PROFILE} SubscriptionId Tag",
        refused={PIPELINE_OBJECT: "InputObject"},
        should_process=True,
    ),
    "Set-AzKeyVaultAccessPolicy": Documented(
        AZ_DOCS + "set-azkeyvaultaccesspolicy",
        ignored=f"BypassObjectIdValidation:switch {PROFILE} EnabledForDeployment:switch "
        "EnabledForDiskEncryption:switch EnabledForTemplateDeployment:switch SubscriptionId",
        refused={
            PIPELINE_OBJECT: "InputObject ResourceId",
            "compound identities (a user through an application) are not supported; grant "
            "the user or the service principal on its own.": "ApplicationId",
        },
        should_process=True,
    ),
    "Remove-AzKeyVaultAccessPolicy": Documented(
        AZ_DOCS + "remove-azkeyvaultaccesspolicy",
        ignored=f"{PROFILE} EnabledForDeployment:switch EnabledForDiskEncryption:switch "
        "EnabledForTemplateDeployment:switch SubscriptionId",
        refused={
            PIPELINE_OBJECT: "InputObject ResourceId",
            "compound identities (a user through an application) are not supported; remove "
            "the user or the service principal on its own.": "ApplicationId",
        },
        should_process=True,
    ),
    # ------------------------------------------------------------------ keys
    "Add-AzKeyVaultKey": Documented(
        AZ_DOCS + "add-azkeyvaultkey",
        ignored=PROFILE,
        refused={
            MANAGED_HSM: "HsmName HsmObject HsmResourceId",
            PIPELINE_OBJECT: "InputObject ResourceId",
            "importing a key file (.pfx/.byok) is not supported by this shell; send the key "
            "as a JWK to the Key Vault REST API (PUT /keys/<name>) or the Azure SDK's "
            "import_key.": "KeyFilePath KeyFilePassword",
            "exportable keys and key release policies are set through the Key Vault REST "
            "API or the Azure SDK, not this shell.": (
                "Exportable:switch Immutable:switch ReleasePolicyPath UseDefaultCVMPolicy:switch"
            ),
        },
        should_process=True,
    ),
    "Get-AzKeyVaultKey": Documented(
        AZ_DOCS + "get-azkeyvaultkey",
        ignored=PROFILE,
        refused={
            MANAGED_HSM: "HsmName HsmObject HsmResourceId",
            PIPELINE_OBJECT: "InputObject ResourceId",
            "saving the public key to a file is not supported by this shell; read it from "
            "the key's JWK (GET /keys/<name>).": "OutFile",
        },
    ),
    "Update-AzKeyVaultKey": Documented(
        AZ_DOCS + "update-azkeyvaultkey",
        ignored=PROFILE,
        refused={
            MANAGED_HSM: "HsmName",
            PIPELINE_OBJECT: "InputObject",
            "key release policies are set through the Key Vault REST API or the Azure SDK, "
            "not this shell.": "Immutable:switch ReleasePolicyPath",
        },
        should_process=True,
    ),
    "Remove-AzKeyVaultKey": Documented(
        AZ_DOCS + "remove-azkeyvaultkey",
        ignored=PROFILE,
        refused={MANAGED_HSM: "HsmName", PIPELINE_OBJECT: "InputObject"},
        should_process=True,
    ),
    "Undo-AzKeyVaultKeyRemoval": Documented(
        AZ_DOCS + "undo-azkeyvaultkeyremoval",
        ignored=PROFILE,
        refused={MANAGED_HSM: "HsmName", PIPELINE_OBJECT: "InputObject"},
        should_process=True,
    ),
    "Backup-AzKeyVaultKey": Documented(
        AZ_DOCS + "backup-azkeyvaultkey",
        ignored=PROFILE,
        refused={MANAGED_HSM: "HsmName", PIPELINE_OBJECT: "InputObject|Key"},
        should_process=True,
    ),
    "Restore-AzKeyVaultKey": Documented(
        AZ_DOCS + "restore-azkeyvaultkey",
        ignored=PROFILE,
        refused={
            MANAGED_HSM: "HsmName HsmObject HsmResourceId",
            PIPELINE_OBJECT: "InputObject ResourceId",
        },
        should_process=True,
    ),
    # ------------------------------------------------------------------ Exchange Online
    "New-DataEncryptionPolicy": Documented(
        EXO_DOCS + "new-dataencryptionpolicy", ignored="DomainController", should_process=True
    ),
    "Set-DataEncryptionPolicy": Documented(
        EXO_DOCS + "set-dataencryptionpolicy",
        ignored="DomainController Force:switch",
        refused={
            "a policy's root keys cannot be replaced here; roll a key (Add-AzKeyVaultKey) "
            "and run -Refresh, or create a new policy and assign it.": (
                "AzureKeyIDs Replace:switch"
            ),
        },
        should_process=True,
    ),
    "Get-DataEncryptionPolicy": Documented(
        EXO_DOCS + "get-dataencryptionpolicy", ignored="DomainController", should_process=True
    ),
    "New-Mailbox": Documented(
        EXO_DOCS + "new-mailbox",
        ignored="AccountDisabled:switch ArchiveDomain EnableRoomMailboxAccount Password "
        "ActiveSyncMailboxPolicy AddressBookPolicy ArbitrationMailbox Archive:switch "
        "ArchiveDatabase Database DomainController FirstName Force:switch "
        "HoldForMigration:switch ImmutableId Initials IsExcludedFromServingHierarchy LastName "
        "MailboxPlan MailboxRegion ManagedFolderMailboxPolicy "
        "ManagedFolderMailboxPolicyAllowed:switch ModeratedBy ModerationEnabled Office "
        "OrganizationalUnit Phone PrimarySmtpAddress ProxyEmailAddress RemotePowerShellEnabled "
        "ResetPasswordOnNextLogon ResourceCapacity RetentionPolicy RoleAssignmentPolicy "
        "RoomMailboxPassword SamAccountName SendModerationNotifications SharingPolicy "
        "TargetAllMDBs:switch ThrottlingPolicy",
        refused={
            "this shell creates user mailboxes and shared mailboxes (-Shared) only.": (
                "Arbitration:switch Discovery:switch Equipment:switch FederatedIdentity "
                "InactiveMailbox LinkedDomainController LinkedMasterAccount LinkedCredential "
                "LinkedRoom:switch Migration:switch PublicFolder:switch RemovedMailbox "
                "Room:switch AuditLog:switch AuxAuditLog:switch SupervisoryReviewPolicy:switch "
                "RemoteArchive:switch"
            ),
        },
        own="DataEncryptionPolicy",
        should_process=True,
    ),
    "New-MailUser": Documented(
        EXO_DOCS + "new-mailuser",
        ignored="ExternalEmailAddress FederatedIdentity Password ArbitrationMailbox "
        "DomainController FirstName ImmutableId Initials LastName MacAttachmentFormat "
        "MailboxRegion MessageBodyFormat MessageFormat ModeratedBy ModerationEnabled "
        "OrganizationalUnit PrimarySmtpAddress RemotePowerShellEnabled "
        "ResetPasswordOnNextLogon SamAccountName SendModerationNotifications "
        "UsePreferMessageFormat",
        refused={"high-volume email (HVE) accounts are not part of customerkey.": "HVEAccount"},
        own="DataEncryptionPolicy",
        should_process=True,
    ),
    "Set-Mailbox": Documented(
        EXO_DOCS + "set-mailbox",
        # Of Set-Mailbox's many settings only -DataEncryptionPolicy protects data; the
        # others (quotas, holds, forwarding, names...) are not kept here.
        ignored="AcceptMessagesOnlyFrom AcceptMessagesOnlyFromDLMembers "
        "AcceptMessagesOnlyFromSendersOrMembers AccountDisabled AddressBookPolicy Alias "
        "AntispamBypassEnabled ApplyMandatoryProperties:switch Arbitration:switch "
        "ArbitrationMailbox ArchiveDatabase ArchiveDomain ArchiveName ArchiveQuota "
        "ArchiveStatus ArchiveWarningQuota AttributesToClear AuditAdmin AuditDelegate "
        "AuditEnabled AuditLog:switch AuditLogAgeLimit AuditOwner AutoArchivingEnabled "
        "AuxAuditLog:switch BypassModerationFromSendersOrMembers CalendarLoggingQuota "
        "CalendarRepairDisabled CalendarVersionStoreDisabled "
        "ClearThrottlingPolicyAssignment:switch ClientExtensions CreateDTMFMap "
        "CustomAttribute1 CustomAttribute2 CustomAttribute3 CustomAttribute4 CustomAttribute5 "
        "CustomAttribute6 CustomAttribute7 CustomAttribute8 CustomAttribute9 CustomAttribute10 "
        "CustomAttribute11 CustomAttribute12 CustomAttribute13 CustomAttribute14 "
        "CustomAttribute15 Database DefaultAuditSet DefaultPublicFolderMailbox "
        "DeliverToMailboxAndForward DisableThrottling DisplayName DomainController "
        "DowngradeHighPriorityMessagesEnabled DumpsterMessagesPerFolderCountReceiveQuota "
        "DumpsterMessagesPerFolderCountWarningQuota ElcProcessingDisabled "
        "EmailAddressDisplayNames EmailAddresses EmailAddressPolicyEnabled "
        "EnableRoomMailboxAccount EndDateForRetentionHold EnforcedTimestamps "
        "ExcludeFromAllHolds:switch ExcludeFromAllOrgHolds:switch ExcludeFromOrgHolds "
        "ExtendedPropertiesCountQuota ExtensionCustomAttribute1 ExtensionCustomAttribute2 "
        "ExtensionCustomAttribute3 ExtensionCustomAttribute4 ExtensionCustomAttribute5 "
        "ExternalOofOptions FolderHierarchyChildrenCountReceiveQuota "
        "FolderHierarchyChildrenCountWarningQuota FolderHierarchyDepthReceiveQuota "
        "FolderHierarchyDepthWarningQuota FoldersCountReceiveQuota FoldersCountWarningQuota "
        "ForwardingAddress ForwardingSmtpAddress GMGen GrantSendOnBehalfTo GroupMailbox "
        "HiddenFromAddressListsEnabled IgnoreDefaultScope:switch ImListMigrationCompleted "
        "ImmutableId InactiveMailbox:switch IsExchangeCloudManaged "
        "IsExcludedFromServingHierarchy IsHierarchyReady IsHierarchySyncEnabled "
        "IssueWarningQuota JournalArchiveAddress Languages LinkedCredential "
        "LinkedDomainController LinkedMasterAccount LitigationHoldDate LitigationHoldDuration "
        "LitigationHoldEnabled LitigationHoldOwner MailboxMessagesPerFolderCountReceiveQuota "
        "MailboxMessagesPerFolderCountWarningQuota MailboxRegion MailTip MailTipTranslations "
        "ManagedFolderMailboxPolicy ManagedFolderMailboxPolicyAllowed:switch Management "
        "MaxBlockedSenders MaxReceiveSize MaxSafeSenders MaxSendSize "
        "MessageCopyForSendOnBehalfEnabled MessageCopyForSentAsEnabled "
        "MessageCopyForSMTPClientSubmissionEnabled MessageTracking "
        "MessageTrackingReadStatusEnabled MicrosoftOnlineServicesID Migration ModeratedBy "
        "ModerationEnabled Name NewPassword NonCompliantDevices OABGen Office "
        "OfflineAddressBook OldPassword OMEncryption OMEncryptionStore Password "
        "PrimarySmtpAddress ProhibitSendQuota ProhibitSendReceiveQuota ProvideConsent:switch "
        "ProvisionedForOfficeGraph:switch PstProvider PublicFolder:switch QueryBaseDN "
        "RecalculateInactiveMailbox:switch RecipientLimits RecoverableItemsQuota "
        "RecoverableItemsWarningQuota RejectMessagesFrom RejectMessagesFromDLMembers "
        "RejectMessagesFromSendersOrMembers RemoteRecipientType "
        "RemoveComplianceTagHoldApplied:switch RemoveDelayHoldApplied:switch "
        "RemoveDelayReleaseHoldApplied:switch RemoveDisabledArchive:switch "
        "RemoveMailboxProvisioningConstraint:switch RemoveManagedFolderAndPolicy:switch "
        "RemoveOrphanedHolds RemovePicture:switch RemoveSpokenName:switch "
        "RequireSenderAuthenticationEnabled ResetPasswordOnNextLogon ResourceCapacity "
        "ResourceCustom RetainDeletedItemsFor RetainDeletedItemsUntilBackup RetentionComment "
        "RetentionHoldEnabled RetentionPolicy RetentionUrl RoleAssignmentPolicy "
        "RoomMailboxPassword RulesQuota SamAccountName SchedulerAssistant SCLDeleteEnabled "
        "SCLDeleteThreshold SCLJunkEnabled SCLJunkThreshold SCLQuarantineEnabled "
        "SCLQuarantineThreshold SCLRejectEnabled SCLRejectThreshold SecondaryAddress "
        "SecondaryDialPlan SendModerationNotifications SharingPolicy SimpleDisplayName "
        "SingleItemRecoveryEnabled SkipDualWrite:switch StartDateForRetentionHold "
        "StsRefreshTokensValidFrom SystemMessageSizeShutoffQuota SystemMessageSizeWarningQuota "
        "ThrottlingPolicy UMDataStorage UMDtmfMap UMGrammar UniqueRecipientsCountLimitLevel "
        "UniqueUnrestrictedGroupsLimitEnabled UpdateEnforcedTimestamp:switch "
        "UseDatabaseQuotaDefaults UseDatabaseRetentionDefaults UserCertificate "
        "UserPrincipalName UserSMimeCertificate WindowsEmailAddress",
        refused={
            "converting a mailbox to another type is not supported here; create a mailbox "
            "of the type wanted (New-Mailbox, -Shared).": "Type",
        },
        should_process=True,
    ),
    "Set-MailUser": Documented(
        EXO_DOCS + "set-mailuser",
        ignored="AcceptMessagesOnlyFrom AcceptMessagesOnlyFromDLMembers "
        "AcceptMessagesOnlyFromSendersOrMembers Alias ArbitrationMailbox ArchiveGuid "
        "ArchiveName BypassModerationFromSendersOrMembers CreateDTMFMap CustomAttribute1 "
        "CustomAttribute2 CustomAttribute3 CustomAttribute4 CustomAttribute5 CustomAttribute6 "
        "CustomAttribute7 CustomAttribute8 CustomAttribute9 CustomAttribute10 "
        "CustomAttribute11 CustomAttribute12 CustomAttribute13 CustomAttribute14 "
        "CustomAttribute15 DisplayName DomainController EmailAddresses "
        "EmailAddressPolicyEnabled EnableLitigationHoldForMigration:switch ExchangeGuid "
        "ExcludeFromAllHolds:switch ExcludeFromAllOrgHolds:switch ExcludeFromOrgHolds "
        "ExtensionCustomAttribute1 ExtensionCustomAttribute2 ExtensionCustomAttribute3 "
        "ExtensionCustomAttribute4 ExtensionCustomAttribute5 ExternalEmailAddress "
        "FederatedIdentity ForceUpgrade:switch GrantSendOnBehalfTo "
        "HiddenFromAddressListsEnabled IgnoreDefaultScope:switch ImmutableId "
        "JournalArchiveAddress MacAttachmentFormat MailboxRegion MailTip MailTipTranslations "
        "MaxReceiveSize MaxSendSize MessageBodyFormat MessageFormat MicrosoftOnlineServicesID "
        "ModeratedBy ModerationEnabled Name Password PrimarySmtpAddress "
        "RecalculateInactiveMailUser:switch RecipientLimits RecoverableItemsQuota "
        "RecoverableItemsWarningQuota RejectMessagesFrom RejectMessagesFromDLMembers "
        "RejectMessagesFromSendersOrMembers RemoveComplianceTagHoldApplied:switch "
        "RemoveDelayHoldApplied:switch RemoveDelayReleaseHoldApplied:switch "
        "RemoveDisabledArchive:switch RemoveLitigationHoldEnabled:switch "
        "RemoveMailboxProvisioningConstraint:switch RemoveOrphanedHolds RemovePicture:switch "
        "RemoveSpokenName:switch RequireSenderAuthenticationEnabled ResetPasswordOnNextLogon "
        "SamAccountName SecondaryAddress SecondaryDialPlan SendModerationNotifications "
        "SimpleDisplayName SkipDualWrite:switch UMDtmfMap "
        "UnblockForwardSyncPostCrossTenantMigration:switch UseMapiRichTextFormat "
        "UsePreferMessageFormat UserCertificate UserPrincipalName UserSMimeCertificate "
        "WindowsEmailAddress",
        refused={"high-volume email (HVE) accounts are not part of customerkey.": "HVEAccount"},
        own="Force",
        should_process=True,
    ),
    "Get-Mailbox": Documented(
        EXO_DOCS + "get-mailbox",
        ignored="Credential DomainController IgnoreDefaultScope:switch "
        "IncludeAcceptMessagesOnlyFromDLMembersWithDisplayNames:switch "
        "IncludeAcceptMessagesOnlyFromSendersOrMembersWithDisplayNames:switch "
        "IncludeAcceptMessagesOnlyFromWithDisplayNames:switch "
        "IncludeEmailAddressDisplayNames:switch IncludeForwardingAddressWithDisplayNames:switch "
        "IncludeGrantSendOnBehalfToWithDisplayNames:switch IncludeInactiveMailbox:switch "
        "ReadFromDomainController:switch SortBy",
        refused={
            FILTERS: "Anr Filter RecipientTypeDetails Database Server OrganizationalUnit "
            "MailboxPlan InactiveMailboxOnly:switch SoftDeletedMailbox:switch Archive:switch "
            "Arbitration:switch AuditLog:switch AuxAuditLog:switch GroupMailbox:switch "
            "Migration:switch Monitoring:switch PublicFolder:switch RemoteArchive:switch "
            "SupervisoryReviewPolicy:switch",
        },
    ),
    "Get-MailUser": Documented(
        EXO_DOCS + "get-mailuser",
        ignored="Credential DomainController IgnoreDefaultScope:switch "
        "ReadFromDomainController:switch SortBy",
        refused={
            FILTERS: "Anr Filter OrganizationalUnit HVEAccount:switch "
            "SharedWithMailUser:switch SoftDeletedMailUser:switch",
        },
    ),
    "Get-MailboxStatistics": Documented(
        EXO_DOCS + "get-mailboxstatistics",
        ignored="DomainController IncludeMoveHistory:switch IncludeMoveReport:switch "
        "IncludePassive:switch IncludeQuarantineDetails:switch NoADLookup:switch "
        "UseCustomRouting:switch",
        refused={
            "statistics are kept per mailbox only (no archives, databases or servers); "
            "name the mailbox with -Identity.": "StoreMailboxIdentity Archive:switch "
            "CopyOnServer Database Server Filter IncludeSoftDeletedRecipients:switch",
        },
    ),
    "New-MoveRequest": Documented(
        EXO_DOCS + "new-moverequest",
        # A move here re-encrypts the mailbox where it is, at once: the database, batch and
        # throttling settings of a real move have nothing to act on.
        ignored="AcceptLargeDataLoss:switch AllowLargeItems:switch ArchiveDomain "
        "ArchiveTargetDatabase BadItemLimit BatchName CompletedRequestAgeLimit DomainController "
        "DoNotPreserveMailboxSignature:switch ForceOffline:switch ForcePull:switch "
        "ForcePush:switch IgnoreRuleLimitErrors:switch IncrementalSyncInterval InternalFlags "
        "LargeItemLimit MoveOptions MRSServer Priority Protect:switch ProxyToMailbox "
        "RequestExpiryInterval SkipMoving SuspendComment TargetDatabase WorkloadType",
        refused={
            "moves to or from another forest or organization are not supported; a move here "
            "re-encrypts the mailbox in place.": "Outbound:switch Remote:switch "
            "RemoteCredential RemoteGlobalCatalog RemoteHostName RemoteLegacy:switch "
            "TargetDeliveryDomain RemoteArchiveTargetDatabase RemoteOrganizationName "
            "RemoteTargetDatabase SourceEndpoint",
            "a move here moves the whole mailbox at once; it cannot be split, delayed or "
            "suspended.": "ArchiveOnly:switch PrimaryOnly:switch Suspend:switch "
            "SuspendWhenReadyToComplete:switch PreventCompletion:switch StartAfter "
            "CompleteAfter",
        },
        should_process=True,
    ),
    "Get-MoveRequest": Documented(
        EXO_DOCS + "get-moverequest",
        ignored="Credential DomainController IncludeSoftDeletedObjects:switch ProxyToMailbox "
        "SortBy",
        refused={
            FILTERS: "BatchName Flags HighPriority MoveStatus Status Offline "
            "OrganizationalUnit Protect RemoteHostName SourceDatabase Suspend "
            "SuspendWhenReadyToComplete TargetDatabase",
        },
    ),
    # ------------------------------------------------------------------ SharePoint Online
    "Register-SPODataEncryptionPolicy": Documented(
        SPO_DOCS + "register-spodataencryptionpolicy", own="Identity", should_process=True
    ),
    "Update-SPODataEncryptionPolicy": Documented(
        SPO_DOCS + "update-spodataencryptionpolicy",
        own="Identity KeyVaultUri",
        should_process=True,
    ),
    "Get-SPODataEncryptionPolicy": Documented(
        SPO_DOCS + "get-spodataencryptionpolicy", own="Identity"
    ),
    "Get-SPOSiteDataEncryptionPolicy": Documented(SPO_DOCS + "get-spositedataencryptionpolicy"),
    # ------------------------------------------------------------------ PowerShell built-ins
    "Get-Date": Documented(
        PS_UTILITY + "get-date",
        ignored="DisplayHint AsUTC:switch",
        refused={
            "this shell prints dates one way only; format them after the fact.": ("Format UFormat"),
            "build the date as text instead (Get-Date -Date '12/27/2016 12:01 AM').": (
                "Year Month Day Hour Minute Second Millisecond UnixTimeSeconds"
            ),
        },
    ),
    "Format-List": Documented(
        PS_UTILITY + "format-list",
        ignored="DisplayError:switch ShowError:switch Force:switch View",
        refused={"pipe the objects in instead.": "InputObject", FILTERS: "GroupBy Expand"},
    ),
    "Format-Table": Documented(
        PS_UTILITY + "format-table",
        ignored="DisplayError:switch ShowError:switch Force:switch View RepeatHeader:switch",
        refused={"pipe the objects in instead.": "InputObject", FILTERS: "GroupBy Expand"},
    ),
    "Select-Object": Documented(
        PS_UTILITY + "select-object",
        ignored="Wait:switch",
        refused={
            "pipe the objects in instead.": "InputObject",
            FILTERS: "ExcludeProperty Unique:switch CaseInsensitive:switch Index SkipIndex "
            "SkipLast",
        },
    ),
    "Write-Output": Documented(PS_UTILITY + "write-output", ignored="NoEnumerate:switch"),
    "Write-Host": Documented(
        PS_UTILITY + "write-host",
        ignored="ForegroundColor BackgroundColor",
        refused={"write the text whole instead.": "NoNewline:switch Separator"},
    ),
    "Out-Null": Documented(
        PS_CORE + "out-null", refused={"pipe the objects in instead.": "InputObject"}
    ),
    "Get-Command": Documented(
        PS_CORE + "get-command",
        ignored="All:switch ListImported:switch UseFuzzyMatching:switch "
        "UseAbbreviationExpansion:switch",
        refused={
            FILTERS: "Verb Noun Module FullyQualifiedModule CommandType TotalCount "
            "ParameterName ParameterType ShowCommandInfo:switch",
            "run Get-Help <cmdlet> for a cmdlet's syntax.": "Syntax:switch ArgumentList",
        },
    ),
    "Get-Help": Documented(
        PS_CORE + "get-help",
        ignored="Full:switch Detailed:switch Examples:switch ShowWindow:switch Online:switch "
        "Path Category Component Functionality Role",
        refused={"Get-Help <cmdlet> shows every parameter's syntax.": "Parameter"},
    ),
}


def documented(name: str) -> Documented | None:
    """Microsoft's documented parameters of cmdlet ``name``, when it is one of Microsoft's."""
    return DOCUMENTED.get(name)


def with_documented(name: str, params: tuple[Param, ...]) -> tuple[Param, ...]:
    """``params`` plus the ignored and refused parameters Microsoft documents for ``name``."""
    entry = DOCUMENTED.get(name)
    if entry is None:
        return params
    return (*params, *entry.ignored_params(), *entry.refused_params())
