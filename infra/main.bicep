// Azure OpenAI gateway: Application Gateway v2 -> Function App (Flex Consumption, Python 3.11) that
// balances requests over many regional Azure OpenAI deployments, keyless (Entra ID + RBAC).
// `azd up` deploys this file at subscription scope; it creates the resource group rg-<environmentName>.
//
// Modules: raw resources in infra/app/ (one module per concern), not Azure Verified Modules
// (br/public:avm/...). The validators that gate every change run offline (checkov's Bicep scanner,
// pycep-parser and tests/infra), and none of them can fetch registry modules: an AVM-based resource
// would be invisible to the security scan and to the structural tests. The resources are small, so
// the AVM wrappers would add little; each module names its AVM equivalent for a later switch.
// pycep-parser knows a subset of Bicep (no map/reduce/toObject lambdas, no user-defined types, no
// spread operator, no multi-line function calls, no fail()), and these templates stay inside it. What a
// template cannot check (a configuration that could not serve anyone) is refused before provisioning by the
// preprovision hook (infra/hooks/azd_hooks.py, see azure.yaml).
targetScope = 'subscription'

// ---------------------------------------------------------------------------------------------------
// azd environment
// ---------------------------------------------------------------------------------------------------

@minLength(1)
@maxLength(64)
@description('Name of the azd environment; names the resource group (rg-<name>) and seeds the resource token.')
param environmentName string

@minLength(1)
@description('Azure region of the gateway resources: one that offers Flex Consumption (and Application Gateway v2).')
@allowed([
  'australiaeast'
  'australiasoutheast'
  'brazilsouth'
  'canadacentral'
  'centralindia'
  'centralus'
  'eastasia'
  'eastus'
  'eastus2'
  'francecentral'
  'germanywestcentral'
  'italynorth'
  'japaneast'
  'koreacentral'
  'northcentralus'
  'northeurope'
  'norwayeast'
  'southafricanorth'
  'southcentralus'
  'southeastasia'
  'southindia'
  'spaincentral'
  'swedencentral'
  'uaenorth'
  'uksouth'
  'ukwest'
  'westcentralus'
  'westeurope'
  'westus'
  'westus2'
  'westus3'
])
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Object id of the deploying user or principal (azd sets AZURE_PRINCIPAL_ID); gets Key Vault Secrets Officer on the gateway vault and Certificates Officer on the TLS vault. Empty skips it.')
param principalId string = ''

@description('Kind of principalId: User for an interactive azd user, ServicePrincipal for a pipeline.')
@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
param principalType string = 'User'

// ---------------------------------------------------------------------------------------------------
// Upstream Azure OpenAI resources and keyless access
// ---------------------------------------------------------------------------------------------------

@description('Resource ids of existing Azure OpenAI accounts (any resource group, subscription or region). Each gets "Cognitive Services OpenAI User" for the gateway identity; every entra backend must be one of them.')
param openAiResourceIds array = []

@description('Object id of the service principal (enterprise application) of the seed flow. Empty: no SPN role is granted.')
param spnObjectId string = ''

@description('The resources of openAiResourceIds on which the templates grant the SPN "Cognitive Services OpenAI User" (opt-in: where it already holds the role, a second assignment fails with 409 RoleAssignmentExists).')
param spnRoleResourceIds array = []

@description('Application (client) id of that SPN. When set the gateway authenticates upstream as the SPN (GATEWAY_CREDENTIAL=spn), else as its managed identity.')
param spnClientId string = ''

@description('Tenant id of the SPN; empty means the tenant of this subscription.')
param spnTenantId string = ''

@description('Name of the Key Vault secret that holds the SPN client secret (store it after the first provision).')
param spnSecretName string = 'gateway-spn-secret'

@description('Backends of the gateway: objects {name, endpoint, deployment, logical, tpm} and optionally rpm, priority, weight, auth and probe; endpoint is https://<account>.openai.azure.com, logical is the name clients use.')
param gatewayBackends array = []

@description('Gateway clients: objects {name} and optionally limits, priority, admin, entra_app_ids (passed through to GATEWAY_CONFIG). Client <name> presents a key held in Key Vault secret gateway-key-<name> or gateway-key-<name>-next (both valid, for rotation).')
param gatewayClients array = []

@description('Routing tuning, passed through as GATEWAY_CONFIG "routing" (see README); empty keeps every default.')
param gatewayRouting object = {}

@description('Tenant id whose Entra ID tokens inbound callers may present; empty accepts gateway keys only.')
param gatewayEntraTenantId string = ''

@description('Audience inbound Entra ID tokens must carry (app id URI or client id); empty accepts gateway keys only.')
param gatewayEntraAudience string = ''

@description('App role inbound Entra ID tokens must carry; empty requires none.')
param gatewayEntraRequiredRole string = ''

@description('Client (a gatewayClients name) that Entra ID applications listed in no entra_app_ids act as; empty refuses their tokens (403).')
param gatewayEntraDefaultClient string = ''

@description('Seconds between re-reads of the client keys from Key Vault; empty keeps the gateway default (300).')
param gatewayKeyRefreshSeconds string = ''

@description('Seconds between ledger flushes to Table Storage; empty keeps the gateway default (1).')
param gatewayLedgerFlushSeconds string = ''

@description('Seconds between reads of the ledger rows of the other instances; empty keeps the gateway default (1).')
param gatewayLedgerReadSeconds string = ''

@description('Seconds the probe results from Table Storage are cached; empty keeps the gateway default (5).')
param gatewayHealthCacheSeconds string = ''

@description('OTLP/HTTP endpoint that also receives the gateway telemetry (OTEL_EXPORTER_OTLP_ENDPOINT); empty sends it to Application Insights only.')
param otlpEndpoint string = ''

@description('NCRONTAB schedule (six fields, with seconds) of the timer function that probes every backend.')
param healthProbeSchedule string = '*/30 * * * * *'

// ---------------------------------------------------------------------------------------------------
// Optional demo Azure OpenAI accounts
// ---------------------------------------------------------------------------------------------------

@description('Regions in which to create a demo Azure OpenAI account with one model deployment (added to the gateway configuration). Empty creates none.')
param demoRegions array = []

@description('Model of the demo deployments; also their deployment name and the logical name clients use.')
param demoModelName string = 'gpt-4o-mini'

@description('Version of the demo model.')
param demoModelVersion string = '2024-07-18'

@description('Deployment type of the demo deployments.')
@allowed([
  'Standard'
  'GlobalStandard'
  'DataZoneStandard'
])
param demoDeploymentSku string = 'GlobalStandard'

@description('Quota of each demo deployment in thousands of tokens per minute.')
@minValue(1)
param demoCapacity int = 10

// ---------------------------------------------------------------------------------------------------
// Application Gateway
// ---------------------------------------------------------------------------------------------------

@description('DNS label of the gateway public IP (<label>.<region>.cloudapp.azure.com); empty derives one from the resource token.')
param appGatewayDnsLabel string = ''

@description('Name of the TLS certificate in the TLS vault (AZURE_TLS_KEY_VAULT_NAME), imported after a first provision; empty serves HTTP on port 80 only.')
param appGatewayCertificateName string = ''

@description('DNS name the certificate is for (a CNAME to GATEWAY_DNS_NAME); GATEWAY_URL uses it. Empty: the gateway DNS name.')
param appGatewayHostName string = ''

@description('With a certificate, also listen on port 80 and redirect to HTTPS (the first request, key included, crosses in clear text).')
param appGatewayAllowHttp bool = false

@description('Use WAF_v2 with an OWASP 3.2 policy instead of Standard_v2.')
param appGatewayEnableWaf bool = false

@description('WAF mode when the WAF is on: Detection logs (the default: prompts with code or SQL trip OWASP rules), Prevention blocks.')
@allowed([
  'Detection'
  'Prevention'
])
param appGatewayWafMode string = 'Detection'

@description('Seconds the gateway waits for the Function App; long enough for streamed answers.')
@minValue(30)
@maxValue(3600)
param appGatewayRequestTimeoutSeconds int = 230

@description('Minimum Application Gateway instances (0 reserves no capacity units).')
@minValue(0)
@maxValue(125)
param appGatewayMinCapacity int = 0

@description('Maximum Application Gateway instances.')
@minValue(2)
@maxValue(125)
param appGatewayMaxCapacity int = 10

@description('Availability zones of the gateway (for example 1, 2 and 3); empty for regions without zones.')
param appGatewayZones array = []

@description('Who may reach the gateway on ports 80/443: Internet or a CIDR range.')
param allowedClientSourcePrefix string = 'Internet'

@description('Address space of the virtual network.')
param vnetAddressPrefix string = '10.40.0.0/16'

@description('Address prefix of the Application Gateway subnet.')
param appGatewaySubnetPrefix string = '10.40.0.0/24'

// ---------------------------------------------------------------------------------------------------
// Function App and supporting services
// ---------------------------------------------------------------------------------------------------

@description('Most Function App instances.')
@minValue(1)
@maxValue(1000)
param functionMaximumInstanceCount int = 100

@description('Memory of each Function App instance in MB.')
@allowed([
  512
  2048
  4096
])
param functionInstanceMemoryMB int = 2048

@description('Always-ready Function App instances (0 scales to zero; each one is billed while idle).')
@minValue(0)
param functionAlwaysReadyInstances int = 0

@description('Concurrent HTTP requests per Function App instance.')
@minValue(1)
@maxValue(1000)
param functionHttpConcurrency int = 16

@description('Days Log Analytics keeps data.')
@minValue(30)
@maxValue(730)
param logAnalyticsRetentionInDays int = 30

@description('Days a deleted Key Vault stays recoverable (purge protection is on).')
@minValue(7)
@maxValue(90)
param keyVaultSoftDeleteRetentionInDays int = 90

@description('Suffix of the Key Vault names, set by the preprovision hook and cleared by azd down: a purge-protected vault keeps its name reserved after deletion, so a new deployment needs new names.')
@maxLength(4)
param keyVaultSalt string = ''

@description('E-mail address that receives the gateway alerts (every host of a deployment cooling down, panic routing); empty creates no action group.')
param alertEmail string = ''

// ---------------------------------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------------------------------

var abbrs = loadJsonContent('abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}
var functionAppName = '${abbrs.functionApp}api-${resourceToken}'
var deploymentContainerName = 'app-package-${take(functionAppName, 32)}'
var hasCertificate = !empty(appGatewayCertificateName)
// Port 80 is the only listener without a certificate; with one it is off unless allowed (then it redirects).
// Parenthesised: pycep-parser, which checkov and the tests use, reads `!a || b` as `!(a || b)`.
var servesHttp = (!hasCertificate) || appGatewayAllowHttp
var useSpn = !empty(spnClientId)

// Demo accounts: the endpoint follows from the custom subdomain, which is the account name.
var demoAccountPrefix = '${abbrs.cognitiveServicesOpenAi}${resourceToken}-'
var demoBackends = [for region in demoRegions: {
  name: 'demo-${region}'
  endpoint: 'https://${demoAccountPrefix}${region}.openai.azure.com'
  deployment: demoModelName
  logical: demoModelName
  tpm: demoCapacity * 1000
  priority: 1
  weight: 1
}]

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: '${abbrs.resourceGroup}${environmentName}'
  location: location
  tags: tags
}

module identity 'app/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    apiIdentityName: '${abbrs.managedIdentity}api-${resourceToken}'
    gatewayIdentityName: '${abbrs.managedIdentity}agw-${resourceToken}'
    location: location
    tags: tags
  }
}

module monitoring 'app/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: '${abbrs.logAnalyticsWorkspace}${resourceToken}'
    applicationInsightsName: '${abbrs.applicationInsights}${resourceToken}'
    location: location
    tags: tags
    retentionInDays: logAnalyticsRetentionInDays
    publisherPrincipalId: identity.outputs.apiPrincipalId
  }
}

module storage 'app/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: '${abbrs.storageAccount}${resourceToken}'
    location: location
    tags: tags
    deploymentContainerName: deploymentContainerName
    functionPrincipalId: identity.outputs.apiPrincipalId
    principalId: principalId
    principalType: principalType
  }
}

// One vault per reader, each identity reading only its own vault (Learn's Key Vault RBAC guidance: a vault per
// application, roles at vault scope): the gateway vault holds the client keys and the SPN secret, which the
// Function reads; the TLS vault holds the certificate, which the Application Gateway reads. Both roles exist
// from the first provision on, long before a certificate is configured (role propagation takes minutes).
module keyVault 'app/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    name: '${abbrs.keyVault}${resourceToken}${keyVaultSalt}'
    location: location
    tags: tags
    softDeleteRetentionInDays: keyVaultSoftDeleteRetentionInDays
    readerPrincipalId: identity.outputs.apiPrincipalId
    principalId: principalId
    principalType: principalType
    principalRole: 'secrets'
    logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsWorkspaceId
  }
}

module tlsKeyVault 'app/keyvault.bicep' = {
  name: 'keyvault-tls'
  scope: rg
  params: {
    name: take('${abbrs.keyVault}tls-${resourceToken}${keyVaultSalt}', 24)
    location: location
    tags: tags
    softDeleteRetentionInDays: keyVaultSoftDeleteRetentionInDays
    readerPrincipalId: identity.outputs.gatewayPrincipalId
    principalId: principalId
    principalType: principalType
    principalRole: 'certificates'
    logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsWorkspaceId
  }
}

module network 'app/network.bicep' = {
  name: 'network'
  scope: rg
  params: {
    vnetName: '${abbrs.virtualNetwork}${resourceToken}'
    nsgName: '${abbrs.networkSecurityGroup}agw-${resourceToken}'
    location: location
    tags: tags
    vnetAddressPrefix: vnetAddressPrefix
    appGatewaySubnetPrefix: appGatewaySubnetPrefix
    allowedClientSourcePrefix: allowedClientSourcePrefix
    clientPorts: concat(servesHttp ? [
      '80'
    ] : [], hasCertificate ? [
      '443'
    ] : [])
  }
}

// Keyless access to every existing OpenAI resource, at the resource's own scope (any subscription).
// Resource id: /subscriptions/<sub>/resourceGroups/<rg>/providers/Microsoft.CognitiveServices/accounts/<name>
// The SPN's role only where asked for: the seed's SPN usually holds it already.
module openAiAccess 'app/openai-rbac.bicep' = [for openAiResourceId in openAiResourceIds: {
  name: take('openai-rbac-${resourceToken}-${uniqueString(openAiResourceId)}', 64)
  scope: resourceGroup(split(openAiResourceId, '/')[2], split(openAiResourceId, '/')[4])
  params: {
    accountName: split(openAiResourceId, '/')[8]
    functionPrincipalId: identity.outputs.apiPrincipalId
    spnObjectId: spnObjectId
    grantSpn: contains(spnRoleResourceIds, openAiResourceId)
  }
}]

module demoOpenAi 'app/openai-demo.bicep' = [for region in demoRegions: {
  name: 'openai-demo-${region}'
  scope: rg
  params: {
    name: '${demoAccountPrefix}${region}'
    location: region
    tags: tags
    deploymentName: demoModelName
    modelName: demoModelName
    modelVersion: demoModelVersion
    skuName: demoDeploymentSku
    capacity: demoCapacity
    functionPrincipalId: identity.outputs.apiPrincipalId
    // New accounts: no earlier assignment can conflict.
    spnObjectId: spnObjectId
  }
}]

module gatewayConfig 'app/gateway-config.bicep' = {
  name: 'gateway-config'
  scope: rg
  params: {
    backends: concat(gatewayBackends, demoBackends)
    clients: gatewayClients
  }
}

// GATEWAY_CONFIG = {"deployments": {"<logical>": [<host>, ...], ...}, "clients": [...], "routing": {...}}
// and "entra_default_client" when set.
var gatewayConfigDocument = union({
  deployments: json('{${join(gatewayConfig.outputs.deploymentEntries, ', ')}}')
  clients: gatewayConfig.outputs.clients
  routing: gatewayRouting
}, empty(gatewayEntraDefaultClient) ? {} : {
  entra_default_client: gatewayEntraDefaultClient
})
var gatewayConfigJson = string(gatewayConfigDocument)

module functionApp 'app/function.bicep' = {
  name: 'function'
  scope: rg
  params: {
    name: functionAppName
    planName: '${abbrs.appServicePlan}${resourceToken}'
    location: location
    tags: tags
    identityId: identity.outputs.apiIdentityId
    identityClientId: identity.outputs.apiClientId
    storageAccountName: storage.outputs.name
    deploymentContainerName: storage.outputs.deploymentContainerName
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    keyVaultName: keyVault.outputs.name
    appGatewaySubnetId: network.outputs.appGatewaySubnetId
    gatewayConfigJson: gatewayConfigJson
    spnTenantId: useSpn && empty(spnTenantId) ? tenant().tenantId : spnTenantId
    spnClientId: spnClientId
    spnSecretName: spnSecretName
    entraTenantId: gatewayEntraTenantId
    entraAudience: gatewayEntraAudience
    entraRequiredRole: gatewayEntraRequiredRole
    healthProbeSchedule: healthProbeSchedule
    keyRefreshSeconds: gatewayKeyRefreshSeconds
    ledgerFlushSeconds: gatewayLedgerFlushSeconds
    ledgerReadSeconds: gatewayLedgerReadSeconds
    healthCacheSeconds: gatewayHealthCacheSeconds
    otlpEndpoint: otlpEndpoint
    maximumInstanceCount: functionMaximumInstanceCount
    instanceMemoryMB: functionInstanceMemoryMB
    alwaysReadyInstances: functionAlwaysReadyInstances
    httpPerInstanceConcurrency: functionHttpConcurrency
  }
}

module appGateway 'app/appgateway.bicep' = {
  name: 'appgateway'
  scope: rg
  params: {
    name: '${abbrs.appGateway}${resourceToken}'
    publicIpName: '${abbrs.publicIpAddress}agw-${resourceToken}'
    wafPolicyName: '${abbrs.appGatewayWafPolicy}${resourceToken}'
    location: location
    tags: tags
    subnetId: network.outputs.appGatewaySubnetId
    functionAppHostName: functionApp.outputs.defaultHostName
    dnsLabel: empty(appGatewayDnsLabel) ? 'aoai-gateway-${resourceToken}' : appGatewayDnsLabel
    identityId: identity.outputs.gatewayIdentityId
    // Versionless: the gateway picks up renewals of the certificate by itself.
    certificateSecretId: hasCertificate ? '${tlsKeyVault.outputs.uri}secrets/${appGatewayCertificateName}' : ''
    serveHttp: servesHttp
    enableWaf: appGatewayEnableWaf
    wafMode: appGatewayWafMode
    requestTimeoutSeconds: appGatewayRequestTimeoutSeconds
    minCapacity: appGatewayMinCapacity
    maxCapacity: appGatewayMaxCapacity
    zones: appGatewayZones
    logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsWorkspaceId
  }
}

module observability 'app/observability.bicep' = {
  name: 'observability'
  scope: rg
  params: {
    workbookName: guid(rg.id, 'aoai-gateway-workbook')
    actionGroupName: '${abbrs.actionGroup}${resourceToken}'
    location: location
    tags: tags
    logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsWorkspaceId
    alertEmail: alertEmail
  }
}

// The URL apps call: the certificate's host name when one is configured.
var gatewayScheme = hasCertificate ? 'https' : 'http'
var gatewayHost = empty(appGatewayHostName) ? appGateway.outputs.fqdn : appGatewayHostName

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output GATEWAY_DNS_NAME string = appGateway.outputs.fqdn
output GATEWAY_URL string = '${gatewayScheme}://${gatewayHost}'
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output AZURE_KEY_VAULT_URI string = keyVault.outputs.uri
output AZURE_TLS_KEY_VAULT_NAME string = tlsKeyVault.outputs.name
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output GATEWAY_TABLE_ENDPOINT string = storage.outputs.tableEndpoint
output AZURE_MANAGED_IDENTITY_CLIENT_ID string = identity.outputs.apiClientId
output APPLICATIONINSIGHTS_NAME string = monitoring.outputs.applicationInsightsName
output AZURE_LOG_ANALYTICS_WORKSPACE_ID string = monitoring.outputs.logAnalyticsWorkspaceId
output GATEWAY_WORKBOOK_ID string = observability.outputs.workbookId
